# pingap config for scripts/bench-body.sh "static": the harness backend's own 100 KB file
# (@WWW@/100k.bin) served by the directory plugin. One worker, access log off (as the
# harness's nginx), sendfile to the plaintext HTTP/1.1 clients.

[basic]
threads = 1
pid_file = "@WORKDIR@/pingap.pid"
upgrade_sock = "@WORKDIR@/pingap-upgrade.sock"
grace_period = "1s"
graceful_shutdown_timeout = "1s"

[servers.bench]
addr = "127.0.0.1:@PORT@"
locations = ["files"]

[plugins.files]
category = "directory"
path = "@WWW@"
chunk_size = "128kb"

[locations.files]
path = "/"
plugins = ["files"]
