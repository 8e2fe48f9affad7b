# nginx with proxy_cache for scripts/bench-body.sh "cache": 1 worker, entries fresh for 1 s
# then revalidated (as pingap's default for a response without Cache-Control), lock on.
worker_processes 1;
daemon off;
pid @WORKDIR@/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path @WORKDIR@;
    proxy_temp_path @WORKDIR@;
    fastcgi_temp_path @WORKDIR@;
    uwsgi_temp_path @WORKDIR@;
    scgi_temp_path @WORKDIR@;
    proxy_cache_path @WORKDIR@/cache levels=1:2 keys_zone=bench:10m;
    upstream backend { server @UPSTREAM@; keepalive 64; }
    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1s;
            proxy_cache_lock on;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status;
        }
    }
}
