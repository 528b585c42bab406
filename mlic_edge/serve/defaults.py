"""The serving defaults that `mlic-edge serve` / `export-triton` show in their --help and the
server applies: here, without the server's imports, so that the CLI reads them at start-up."""
DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 2000
DEFAULT_MAX_REQUEST_MB = 64.0        # encoded image bytes per request
