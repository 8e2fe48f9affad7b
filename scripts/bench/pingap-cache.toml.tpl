# pingap config for scripts/bench-body.sh "cache": the memory cache in front of the harness
# backend. Its 100k.bin has no Cache-Control, so an entry is fresh for pingap's 1 s and then
# revalidated (ETag); nginx-cache.conf.tpl keeps its entries as long. One worker, access log
# off (as the harness's nginx).

[basic]
threads = 1
pid_file = "@WORKDIR@/pingap.pid"
upgrade_sock = "@WORKDIR@/pingap-upgrade.sock"
grace_period = "1s"
graceful_shutdown_timeout = "1s"

[servers.bench]
addr = "127.0.0.1:@PORT@"
locations = ["all"]

[plugins.cache]
category = "cache"
directory = "memory://bench"

[locations.all]
path = "/"
upstream = "backend"
plugins = ["cache"]

[upstreams.backend]
addrs = ["@UPSTREAM@"]
