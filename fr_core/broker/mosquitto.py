"""A real mosquitto for tests: started on a free loopback port with a TLS certificate made for
the run, a password file, a per-device ACL and on-disk persistence; it can be SIGKILLed and
restarted on the same port. Needs the ``mosquitto`` program (Debian: ``apt-get install
mosquitto``)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from fr_core.broker.certs import CertificateAuthority

BRIDGE_USER = "fr-bridge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )


class Mosquitto:
    """``users`` maps usernames to passwords; devices may only use fr/v1/devices/<user>/#."""

    def __init__(
        self,
        folder: Path,
        users: dict[str, str],
        *,
        require_client_cert: bool = False,
        ca: CertificateAuthority | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = ca or CertificateAuthority(self.folder / "pki", "fr-edge mosquitto test CA")
        self.server = self.ca.issue("mosquitto", hosts=("127.0.0.1", "localhost"))
        self.port = free_port()
        self.users = dict(users)
        self._write_config(require_client_cert)
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self, require_client_cert: bool) -> None:
        pw = self.folder / "passwd"
        pw.write_text("")
        os.chmod(pw, 0o600)
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in self.users.items():
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [passwd, "-b", str(pw), user, password], check=True, capture_output=True
            )
        acl = self.folder / "acl"
        acl.write_text(
            f"user {BRIDGE_USER}\ntopic readwrite fr/v1/#\n\npattern readwrite fr/v1/devices/%u/#\n"
        )
        os.chmod(acl, 0o600)
        (self.folder / "data").mkdir(exist_ok=True)

        lines = [
            # run as whoever started it (as root it would otherwise switch to "mosquitto",
            # who cannot read the 0600 files made for the test)
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {pw}",
            f"acl_file {acl}",
            "persistence true",
            f"persistence_location {self.folder / 'data'}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "max_inflight_messages 100",
            "max_queued_messages 100000",
            "log_type error",
            "log_type warning",
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.ca.cert_path}",
            f"certfile {self.server.cert}",
            f"keyfile {self.server.key}",
            "tls_version tlsv1.2",
        ]
        if require_client_cert:
            lines += ["require_certificate true", "use_identity_as_username true"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as on a crash or power loss."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
