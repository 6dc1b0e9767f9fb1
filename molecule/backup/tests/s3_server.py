"""moto's S3 over TLS with HTTP/1.1 keep-alive, for the backup scenario's tests (conftest.py).

`moto_server --ssl` closes each connection without a TLS close_notify (Python's socketserver
shuts the socket down under the TLS layer), which pgBackRest's OpenSSL 3 reports as
"unexpected eof while reading". This serves the same moto application through werkzeug with
a self-signed certificate, and says close_notify before closing.

    python s3_server.py ADDRESS PORT
"""
import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server


class KeepAliveHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, *args, **kwargs):
        pass


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(address, port, app, threaded=True, request_handler=KeepAliveHandler, ssl_context="adhoc")
    print("listening on https://%s:%d" % (address, port), flush=True)
    plain_shutdown = server.shutdown_request

    def shutdown_request(request):
        try:
            request.unwrap()   # close_notify, then the socket is closed as usual
        except (OSError, ValueError):
            pass
        plain_shutdown(request)

    server.shutdown_request = shutdown_request
    server.serve_forever()


if __name__ == "__main__":
    main()
