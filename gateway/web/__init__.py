"""Static files of the status page (served by ``gateway.http_server``; no build step)."""
