"""Network namespaces for the cluster tests: node ``i`` runs in namespace ``…n<i>`` at
``10.77.<k>.<i>``, every namespace joined by a veth pair to a bridge in the test's own
namespace (``10.77.<k>.254``), so the test reaches every node and the nodes reach each
other through the bridge. ``isolate(i)`` drops, inside node ``i``'s namespace, all
traffic between it and the other nodes (the test still reaches it: a client on the
minority side); ``heal(i)`` lets it through again. Everything is removed by
``cleanup()``, which the fixture calls even when the test fails.

Needs root and `ip`/`iptables`; :func:`available` says why not when they are missing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


def available() -> str | None:
    """``None`` when namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"chprobe{os.getpid() % 100000}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "iptables", "-L", "-n")
    except (subprocess.CalledProcessError, OSError) as e:
        return f"cannot create a network namespace with iptables: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Netns:
    def __init__(self, n: int):
        self.n = n
        self.tag = f"{random.randrange(16**4):04x}"
        self.net = random.randrange(1, 250)
        self.bridge = f"chbr{self.tag}"
        self.made: list[str] = []
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self.made.append("bridge")
            _run("ip", "addr", "add", f"10.77.{self.net}.254/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            # Where bridged traffic passes the host's filter (br_netfilter) and the
            # FORWARD policy drops (as Docker sets it), let the bridge's own traffic by.
            _run("iptables", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
            self.made.append("forward")
            for i in range(1, n + 1):
                ns, veth = self.ns(i), f"chv{self.tag}{i}"
                _run("ip", "netns", "add", ns)
                self.made.append(ns)
                _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _run("ip", "link", "set", veth, "master", self.bridge, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.cleanup()
            raise

    def ns(self, i: int) -> str:
        return f"ch{self.tag}n{i}"

    def addr(self, i: int) -> str:
        return f"10.77.{self.net}.{i}"

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(i)]

    def isolate(self, i: int) -> None:
        """Cuts node ``i`` off from every other node, both ways (the test still reaches it)."""
        for j in range(1, self.n + 1):
            if j != i:
                _run(*self.prefix(i), "iptables", "-I", "INPUT", "-s", self.addr(j), "-j", "DROP")
                _run(*self.prefix(i), "iptables", "-I", "OUTPUT", "-d", self.addr(j), "-j", "DROP")

    def heal(self, i: int) -> None:
        _run(*self.prefix(i), "iptables", "-F", "INPUT")
        _run(*self.prefix(i), "iptables", "-F", "OUTPUT")

    def cleanup(self) -> None:
        for name in reversed(self.made):
            if name == "bridge":
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            elif name == "forward":
                subprocess.run(
                    ["iptables", "-D", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"],
                    capture_output=True,
                )
            else:
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made.clear()
