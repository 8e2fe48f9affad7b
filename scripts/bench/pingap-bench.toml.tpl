# pingap config for scripts/bench.sh. The proxybench command fills in, with sed, the
# at-sign placeholders for the port proxybench assigns, the harness backend (host:port) and the
# harness scratch dir (configs, logs).
# One worker, one server, one location, access log ON (combined) to a file.

[basic]
threads = 1
pid_file = "@WORKDIR@/pingap.pid"
upgrade_sock = "@WORKDIR@/pingap-upgrade.sock"
# the harness stops us with SIGTERM (graceful) and SIGKILLs after 8 s: keep the drain short
grace_period = "1s"
graceful_shutdown_timeout = "1s"

[servers.bench]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
access_log = "@WORKDIR@/pingap-access.log combined"
http1_codec = "@CODEC@"

[locations.all]
path = "/"
upstream = "backend"

[upstreams.backend]
addrs = ["@UPSTREAM@"]
