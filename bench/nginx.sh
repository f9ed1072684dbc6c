# bench/nginx.sh: sourced by bench/run.sh and bench/feed_pair.sh; the one nginx setup both
# compare convenor with.
#
# write_nginx_conf WORK PORT:ROOT...  writes WORK/nginx.conf: one worker, access log off,
# sendfile with tcp_nopush and tcp_nodelay, keep-alive without a request limit, an open-file
# cache, the feed's Content-Type and Cache-Control, and one server per PORT:ROOT on 127.0.0.1.
write_nginx_conf() {
  local work=$1 spec
  shift
  mkdir -p "$work/nginx-tmp"
  {
    cat <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 10000000;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  client_body_temp_path $work/nginx-tmp/body;
  proxy_temp_path $work/nginx-tmp/proxy;
  fastcgi_temp_path $work/nginx-tmp/fastcgi;
  uwsgi_temp_path $work/nginx-tmp/uwsgi;
  scgi_temp_path $work/nginx-tmp/scgi;
  types { }
  default_type "text/calendar; charset=utf-8";
CONF
    for spec in "$@"; do
      printf '  server { listen 127.0.0.1:%s; root %s;\n' "${spec%%:*}" "${spec#*:}"
      printf '           add_header Cache-Control "max-age=3600, no-transform"; }\n'
    done
    echo "}"
  } >"$work/nginx.conf"
}
