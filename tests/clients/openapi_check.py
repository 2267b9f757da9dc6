"""Checks the agent's OpenAPI document against the agent itself.

Usage: openapi_check.py URL NAMESPACE POD
1. The document is valid OpenAPI 3.1 (openapi-spec-validator).
2. Every documented path and method is served: a request to it never gets
   the router's own "could not find the requested resource" 404 or a 405.
3. Real answers match their documented schemas: the target list, a target,
   a run, each diagnostic view and each probe (DNS, TCP, HTTP) of
   NAMESPACE/POD.
Prints one JSON object: {"checked": [...]}; exits non-zero on the first miss.
"""
import json
import sys
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def call(url, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def main() -> None:
    base, namespace, pod = sys.argv[1:]
    status, raw = call(f"{base}/openapi.json")
    assert status == 200, status
    spec = json.loads(raw)
    validate(spec)
    checked = []

    fill = {"namespace": namespace, "pod": pod, "id": "0123abc", "view": "sockets"}
    for path, item in spec["paths"].items():
        for method in item:
            url = base + path.format(**fill)
            if path.endswith("/capture"):
                url += "?duration=1s"  # a capture runs 30 s by default
            body = {"command": ["true"]} if method == "post" else None
            status, raw = call(url, method.upper(), body)
            text = raw.decode(errors="replace")
            assert status != 405, f"{method} {path}: 405"
            assert "could not find the requested resource" not in text, f"{method} {path} is not served"
            checked.append(f"{method} {path}")

    def conforms(schema_name, value, where):
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
        errors = list(Draft202012Validator(schema).iter_errors(value))
        assert not errors, f"{where} does not match {schema_name}: {errors[0].message}"
        checked.append(f"{where} ~ {schema_name}")

    ok = lambda s, raw: (s == 200 and json.loads(raw)) or sys.exit(f"{s}: {raw[:300]!r}")
    conforms("TargetList", ok(*call(f"{base}/v1/targets")), "GET /v1/targets")
    conforms("Target", ok(*call(f"{base}/v1/targets/{namespace}/{pod}")), "GET target")
    run = ok(*call(f"{base}/v1/targets/{namespace}/{pod}/run", "POST", {"command": ["hostname"]}))
    conforms("RunResult", run, "POST run")
    items = {"processes": "ProcessEntry", "sockets": "SocketEntry", "interfaces": "Interface",
             "routes": "Route", "open-files": "OpenFile", "env": "EnvVar", "mounts": "Mount"}
    for view, entry in items.items():
        answer = ok(*call(f"{base}/v1/targets/{namespace}/{pod}/diag/{view}"))
        conforms("DiagAnswer", answer, f"diag {view}")
        for item in answer["items"]:
            conforms(entry, item, f"diag {view} item")
    cgroup = ok(*call(f"{base}/v1/targets/{namespace}/{pod}/diag/cgroup"))
    conforms("DiagAnswer", cgroup, "diag cgroup")
    probes = {"dns?name=localhost": "DnsResult", "dns?name=nothing.invalid&timeout=1s": "DnsResult",
              "tcp?host=127.0.0.1&port=8080": "TcpResult", "http?url=http://127.0.0.1:8080/": "HttpResult"}
    for probe, result in probes.items():
        answer = ok(*call(f"{base}/v1/targets/{namespace}/{pod}/diag/{probe}"))
        conforms(result, answer, f"diag {probe.split('?')[0]}")
    print(json.dumps({"checked": sorted(set(checked))}))


if __name__ == "__main__":
    main()
