"""(A script run from a checkout, not part of the installed harness: it uses the tests' helpers.)

The gateway's CPU per QoS 1 message through its MQTT link, publishing and acknowledgement together: a real
mosquitto of its own, ``MqttLink.publish_all`` of 12 messages of ~1 KB (a Modbus read's 62 values in the
``device`` layout) awaited until every PUBACK is in, ``--rounds`` times after a warm-up; CPU is this process's
(user + sys) over the measured rounds.

    python bench/scripts/mqtt_ack_cost.py [--rounds 3000] [--protocol 5|3.1.1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.mqtt.adapter import MqttLink
from connectors.mqtt.config import MqttSinkConfig
from gateway.logs import get_logger
from tests.servers import mosquitto

VALUES = ",".join(f'"tag_{i:04d}":{20 + i * 0.123456789!r}' for i in range(62))
PAYLOAD = ('{"ts":"2026-12-05T21:00:00.000Z","source":"line07","device":"filler",'
           f'"values":{{{VALUES}}},"quality":{{}}}}')


async def measure(port: int, rounds: int, protocol: str) -> float:
    link = MqttLink(MqttSinkConfig.model_validate({"port": port, "protocol": protocol}), client_id="ack-cost",
                    log=get_logger("bench"))
    await link.start()
    if not await link.wait_connected(10):
        raise SystemExit("mosquitto did not accept the connection")
    messages = [(f"plant/line07/filler/{i}", PAYLOAD.encode()) for i in range(12)]
    try:
        for _ in range(100):
            await link.publish_all(messages, 1, False)
        t0 = time.process_time()
        for _ in range(rounds):
            await link.publish_all(messages, 1, False)
        return (time.process_time() - t0) / (rounds * len(messages))
    finally:
        await link.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per QoS 1 message through the MQTT link")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp)) as broker:
        per_message = asyncio.run(measure(broker.port, args.rounds, args.protocol))
    print(f"{per_message * 1e6:.1f} µs of CPU per QoS 1 message (MQTT {args.protocol}, {len(PAYLOAD)} bytes, "
          f"12 per write, {args.rounds} writes)")


if __name__ == "__main__":
    main()
