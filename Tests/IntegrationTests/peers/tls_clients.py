"""TLS clients for the certificate reload and transfer tests (standard library only).

  traffic PORT CA STOPFILE
      Until STOPFILE exists: three threads each open a new TLS connection per request (the
      server certificate's CN noted per handshake), one thread keeps one keep-alive connection.
      Prints "cn NAME" when the CN seen on new connections changes, "after20" once 20 requests
      on new connections succeeded after the first change, then a final JSON summary line.
  download PORT CA PATH
      GET PATH (a chunked /big with an x-checksum trailer) over TLS; prints
      "<sha256 of the body> <length> <x-checksum trailer>".
"""
import hashlib, http.client, json, os, socket, ssl, sys, threading, time


def common_name(sock):
    return dict(item[0] for item in sock.getpeercert()["subject"])["commonName"]


def traffic(port, ca, stop):
    ctx = ssl.create_default_context(cafile=ca)
    lock = threading.Lock()
    state = {"new_ok": 0, "new_fail": 0, "new_after_change": 0, "cns": [], "keepalive_ok": 0,
             "keepalive_fail": 0, "keepalive_after_change": 0, "keepalive_reconnected": False,
             "keepalive_cn": None, "failures": []}

    def fail(kind, what):
        with lock:
            state[kind] += 1
            state["failures"].append(what)

    def new_connections(tid):
        i = 0
        while not os.path.exists(stop):
            i += 1
            path = "/n%d-%d" % (tid, i)
            try:
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
                name = common_name(s)
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
                want, got = ("hello from upstream " + path).encode(), b""
                while want not in got:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                s.close()
                if want not in got:
                    raise Exception("answer %r" % got[:200])
                with lock:
                    state["new_ok"] += 1
                    if not state["cns"] or state["cns"][-1][0] != name:
                        state["cns"].append([name, 0])
                        print("cn", name, flush=True)
                    state["cns"][-1][1] += 1
                    if len(state["cns"]) > 1:
                        state["new_after_change"] += 1
                        if state["new_after_change"] == 20:
                            print("after20", flush=True)
            except Exception as e:
                fail("new_fail", "%s: %r" % (path, e))
            time.sleep(0.01)

    def keepalive():
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
        conn.connect()
        first = conn.sock
        state["keepalive_cn"] = common_name(first)
        i = 0
        while not os.path.exists(stop):
            i += 1
            try:
                conn.request("GET", "/k%d" % i)
                body = conn.getresponse().read()
                if body != ("hello from upstream /k%d" % i).encode():
                    raise Exception("answer %r" % body[:200])
                with lock:
                    state["keepalive_ok"] += 1
                    if conn.sock is not first:
                        state["keepalive_reconnected"] = True
                    if len(state["cns"]) > 1:
                        state["keepalive_after_change"] += 1
            except Exception as e:
                fail("keepalive_fail", "/k%d: %r" % (i, e))
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=new_connections, args=(t,)) for t in range(3)] + [threading.Thread(target=keepalive)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(state), flush=True)


def download(port, ca, path):
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60), server_hostname="localhost")
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    f = s.makefile("rb")
    status = f.readline()
    if b" 200 " not in status:
        raise SystemExit("status %r" % status)
    while f.readline() not in (b"\r\n", b""):
        pass
    digest, length, trailer = hashlib.sha256(), 0, ""
    while True:
        size = int(f.readline().split(b";")[0].strip(), 16)
        if size == 0:
            break
        data = f.read(size)
        digest.update(data)
        length += len(data)
        f.readline()
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "x-checksum":
            trailer = value.strip()
    print(digest.hexdigest(), length, trailer, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "traffic":
        traffic(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "download":
        download(int(sys.argv[2]), sys.argv[3], sys.argv[4])
