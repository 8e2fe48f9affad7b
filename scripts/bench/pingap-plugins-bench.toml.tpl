# pingap config for scripts/bench-plugins.sh: the scripts/bench.sh setup (one worker, one
# server, access log ON) with a plugin chain on the location. The command fills in, with
# sed, the at-sign placeholders: port, harness backend, scratch dir and the location's
# plugin list (empty for the row without plugins).

[basic]
threads = 1
pid_file = "@WORKDIR@/pingap.pid"
upgrade_sock = "@WORKDIR@/pingap-upgrade.sock"
grace_period = "1s"
graceful_shutdown_timeout = "1s"

[servers.bench]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
access_log = "@WORKDIR@/pingap-access.log combined"

[locations.all]
path = "/"
upstream = "backend"
plugins = [@PLUGINS@]

[upstreams.backend]
addrs = ["@UPSTREAM@"]

[plugins.rid]
category = "request_id"

[plugins.resp]
category = "response_headers"
set_headers = ["X-Frame-Options: DENY", "X-Content-Type-Options: nosniff"]
remove_headers = ["X-Powered-By"]

[plugins.cors]
category = "cors"
allow_origin = "https://app.example.com"
allow_methods = "GET, POST"

[plugins.key]
category = "key_auth"
query = "apikey"
keys = ["bench-key"]
