"""Port-forward through the official Python kubernetes client's portforward()
(v4.channel.k8s.io, ports in the query).

Usage: python_portforward.py URL NAMESPACE POD
The pod serves HTTP on 8080 and echoes on 9000; nothing listens on 81.
Prints one JSON object: the HTTP body read through 8080, whether 1 MiB came
back unchanged through 9000, and the error the client reports for 81.
"""
import json
import os
import sys

from kubernetes import client
from kubernetes.stream import portforward


def main() -> None:
    url, namespace, pod = sys.argv[1:]
    config = client.Configuration()
    config.host = url
    api = client.CoreV1Api(client.ApiClient(config))

    pf = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports="8080,9000")
    web = pf.socket(8080)
    web.setblocking(True)
    web.sendall(b"GET / HTTP/1.0\r\nHost: pf\r\n\r\n")
    # The WebSocket (and so this socket) stays open while port 9000 is
    # forwarded too: read what Content-Length says.
    response = b""
    while b"\r\n\r\n" not in response:
        response += web.recv(65536)
    head, body = response.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += web.recv(65536)
    body = body.decode()

    echo = pf.socket(9000)
    echo.setblocking(True)
    data = os.urandom(1 << 20)
    echo.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = echo.recv(65536)
        if not chunk:
            break
        got += chunk
    echo.close()
    pf.close()

    refused = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports="81")
    sock = refused.socket(81)
    sock.setblocking(True)
    try:
        sock.recv(1)
    except Exception:
        pass
    error = refused.error(81)
    refused.close()

    print(json.dumps({"http": body, "echo": got == data, "refused": error or ""}))


if __name__ == "__main__":
    main()
