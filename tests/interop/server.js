// A node-opcua server for the interoperability tests: node server.js PORT
// Prints "ready URL" once listening. Namespace urn:test:nodeopcua holds a Plant object with a few
// typed variables; Counter changes every 100 ms, Setpoint is writable. Namespace urn://node-opcua-simulator
// is node-opcua's own sample address space (node-opcua-address-space-for-conformance-testing): the
// Scalar_Simulation variables of every type change every SIMULATION_MS, Static_Array_* and
// Static_MultiDimensional_Array_* hold arrays and matrices, AccessLevel_* nodes have every access right.
const { OPCUAServer } = require("node-opcua-server");
const { DataType, Variant } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");
const { nodesets } = require("node-opcua-nodesets");

const SIMULATION_MS = 200;

async function main() {
  const port = parseInt(process.argv[2] || "4840", 10);
  const server = new OPCUAServer({
    port,
    nodeset_filename: [nodesets.standard],
    hostname: "127.0.0.1",
    resourcePath: "/interop",
    buildInfo: { productName: "edge-gateway interop server" },
    serverCapabilities: { operationLimits: { maxNodesPerRead: 3, maxMonitoredItemsPerCall: 2 } },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace("urn:test:nodeopcua");  // index 2: the tests' browse paths use it
  const { build_address_space_for_conformance_testing } = await import("node-opcua-address-space-for-conformance-testing");
  await build_address_space_for_conformance_testing(addressSpace, { mass_variables: false });
  const sim = addressSpace.getNamespace("urn://node-opcua-simulator");
  // the sample's own rate setting (2 s by default), set as a client would write it
  sim.findNode("s=Scalar_Simulation_Interval").setValueFromSource(
    new Variant({ dataType: DataType.UInt16, value: SIMULATION_MS }));
  const plant = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Plant", nodeId: "s=Plant" });
  let counter = 0;
  let setpoint = 1.5;
  ns.addVariable({ componentOf: plant, browseName: "Counter", nodeId: "s=Plant.Counter", dataType: "UInt32", minimumSamplingInterval: 100,
    value: { get: () => new Variant({ dataType: DataType.UInt32, value: counter }) } });
  ns.addVariable({ componentOf: plant, browseName: "Temperature", nodeId: "s=Plant.Temperature", dataType: "Double",
    value: { get: () => new Variant({ dataType: DataType.Double, value: 21.25 }) } });
  ns.addVariable({ componentOf: plant, browseName: "Running", nodeId: "s=Plant.Running", dataType: "Boolean",
    value: { get: () => new Variant({ dataType: DataType.Boolean, value: true }) } });
  ns.addVariable({ componentOf: plant, browseName: "Name", nodeId: "s=Plant.Name", dataType: "String",
    value: { get: () => new Variant({ dataType: DataType.String, value: "line-7" }) } });
  ns.addVariable({ componentOf: plant, browseName: "Setpoint", nodeId: "s=Plant.Setpoint", dataType: "Float",
    accessLevel: "CurrentRead | CurrentWrite", userAccessLevel: "CurrentRead | CurrentWrite",
    value: {
      get: () => new Variant({ dataType: DataType.Float, value: setpoint }),
      set: (v) => { if (v.dataType !== DataType.Float) return StatusCodes.BadTypeMismatch; setpoint = v.value; return StatusCodes.Good; },
    } });
  setInterval(() => { counter += 1; }, 100);
  await server.start();
  console.log(`ready ${server.getEndpointUrl()}`);
  const stop = async () => { await server.shutdown(100); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
