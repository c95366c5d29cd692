"""Network probe run on a lab host (standard library only, Python 3.9+); prints one JSON line.

  probe.py get URL [TOKEN|-] [follow|nofollow]
  probe.py connect HOST PORT TIMEOUT
  probe.py resolve NAME
"""
import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url, token="-", follow="follow"):
    request = urllib.request.Request(url, headers={"User-Agent": "lab-probe"})
    if token != "-":
        pair = base64.b64encode(("probe:" + token).encode()).decode()
        request.add_header("Authorization", "Basic " + pair)
    handlers = [] if follow == "follow" else [NoRedirect()]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=20) as response:
            body = response.read()
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as error:
        body, status, headers = error.read(), error.code, error.headers
    return {"status": status, "location": headers.get("Location"),
            "www_authenticate": headers.get("WWW-Authenticate"), "length": len(body),
            "body": body[:4000].decode("utf-8", "replace")}


def connect(host, port, timeout):
    start = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=float(timeout)):
            result = "connected"
    except socket.timeout:
        result = "timeout"
    except ConnectionRefusedError:
        result = "refused"
    except OSError as error:
        result = "error: " + error.__class__.__name__
    return {"result": result, "seconds": round(time.monotonic() - start, 2)}


def resolve(name):
    start = time.monotonic()
    try:
        result = socket.gethostbyname(name)
    except OSError as error:
        result = "error: " + error.__class__.__name__
    return {"result": result, "seconds": round(time.monotonic() - start, 2)}


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    print(json.dumps({"get": get, "connect": connect, "resolve": resolve}[verb](*args)))
