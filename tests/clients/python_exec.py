"""Exec through the official Python kubernetes client's stream() (v4.channel.k8s.io).

Usage: python_exec.py URL NAMESPACE POD CONTAINER -- COMMAND...
Prints one JSON object: stdout, stderr (kept apart) and the exit code the
client parsed from the status channel.
"""
import json
import sys

from kubernetes import client
from kubernetes.stream import stream


def main() -> None:
    url, namespace, pod, container, sep, *command = sys.argv[1:]
    assert sep == "--", "usage: python_exec.py URL NS POD CONTAINER -- COMMAND..."
    config = client.Configuration()
    config.host = url
    api = client.CoreV1Api(client.ApiClient(config))
    ws = stream(
        api.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        container=container,
        command=command,
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    ws.run_forever(timeout=30)
    print(json.dumps({
        "stdout": ws.read_stdout(),
        "stderr": ws.read_stderr(),
        "exitCode": ws.returncode,
    }))


if __name__ == "__main__":
    main()
