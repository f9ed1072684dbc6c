#!/usr/bin/env python3
"""A real SMTP server on loopback for the mail tests (aiosmtpd).

Listens on 127.0.0.1 port 0 and prints "PORT <n>" on stdout once it accepts connections.
Each accepted message is stored as <store>/<n>.eml (the bytes received) and <n>.json (envelope).
Options:
  --store DIR            where to store received messages (required)
  --fail-at STAGE        answer --code at that stage instead of going on: MAIL, RCPT or DATA
                         (the message), or GREETING, EHLO or STARTTLS (connection setup)
  --code CODE            the reply code for --fail-at (e.g. 421, 451, 550, 554)
  --auth USER:PASSWORD   offer AUTH PLAIN and LOGIN (without TLS too: loopback tests) and
                         require it before MAIL; other credentials get aiosmtpd's
                         "535 5.7.8 Authentication credentials invalid"
  --stall                accept connections and never say anything
  --tls-cert/--tls-key   offer STARTTLS with this certificate and require it before MAIL
  --one-per-connection   after one message on a connection, answer MAIL with 421
  --refuse-rcpt ADDR=CODE  answer CODE to RCPT TO:<ADDR> only (repeatable); other recipients
                         are accepted
  --refuse-rcpt-times N  with --refuse-rcpt: refuse each such address N times only, then
                         accept it (a recipient put off that a retry reaches)
  --implicit-tls         with --tls-cert/--tls-key: TLS from the first byte (port 465 style)
  --keep-refused         with --fail-at data: still store each refused message (as above), so a
                         test can compare it with what a retry delivers elsewhere
  --no-smtputf8          do not offer SMTPUTF8 (RFC 6531) in the EHLO reply: a relay that cannot
                         take an address that is not ASCII (offered by default, as Postfix does)
  --no-8bitmime          do not offer 8BITMIME (RFC 6152) in the EHLO reply: a relay that takes
                         7-bit messages only (offered by default)
The .json also records the client's address ("peer", [host, port]): one peer port per
connection, so a test can tell reused connections from new ones; "authenticated", whether
the client passed AUTH; and "mail_options", the MAIL FROM parameters the client sent (e.g.
"SMTPUTF8", "BODY=8BITMIME").
Runs until killed.
"""
import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    keep_refused = False
    refuse_rcpt_times = None

    def __init__(self, store, fail_at, code, one_per_connection=False, refuse_rcpt=None):
        self.one_per_connection = one_per_connection
        self.refuse_rcpt = refuse_rcpt or {}
        self.rcpt_refusals = {}
        self.store = store
        self.fail_at = fail_at
        self.code = code
        self.count = 0

    def _fail(self, stage):
        if self.fail_at == stage:
            return f"{self.code} test server refuses at {stage.upper()} with {self.code}"
        return None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        fail = self._fail("mail")
        if fail:
            return fail
        if self.one_per_connection and getattr(session, "accepted", 0) > 0:
            return "421 4.7.0 test server takes one message per connection"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        fail = self._fail("rcpt")
        if fail:
            return fail
        code = self.refuse_rcpt.get(address)
        refused = self.rcpt_refusals.get(address, 0)
        if code and (self.refuse_rcpt_times is None or refused < self.refuse_rcpt_times):
            self.rcpt_refusals[address] = refused + 1
            return f"{code} test server refuses recipient <{address}> with {code}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        fail = self._fail("data")
        if fail and not self.keep_refused:
            return fail
        self.count += 1
        session.accepted = getattr(session, "accepted", 0) + 1
        n = self.count
        base = os.path.join(self.store, str(n))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.replace(base + ".eml.tmp", base + ".eml")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # After STARTTLS (session.ssl) or from the first byte (the transport's TLS).
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "peer": list(session.peer),
            "authenticated": bool(session.authenticated),
            "mail_options": envelope.mail_options,
        }
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.replace(base + ".json.tmp", base + ".json")
        if fail:
            return fail
        return f"250 2.0.0 Ok: queued as test-{n}"


class Authenticator:
    """Accepts exactly one user and password (AUTH PLAIN or LOGIN)."""

    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        # handled=False: aiosmtpd answers a failure itself, with 535 5.7.8.
        return AuthResult(success=ok, handled=False)


class SetupRefusingSMTP(SMTP):
    """aiosmtpd's SMTP that can answer `code` to the greeting, EHLO or STARTTLS instead."""

    def __init__(self, handler, refuse_at=None, code=None, no_8bitmime=False, **kwargs):
        super().__init__(handler, **kwargs)
        self.refuse_at = refuse_at
        self.refuse_code = code
        self.no_8bitmime = no_8bitmime
        self.greeted = False

    def _refusal(self, stage):
        return f"{self.refuse_code} test server refuses at {stage.upper()} with {self.refuse_code}"

    async def push(self, status):
        # aiosmtpd always offers 8BITMIME: its EHLO line is left out here when asked.
        if self.no_8bitmime and str(status) == "250-8BITMIME":
            return
        # The first line a session pushes is the 220 greeting.
        if not self.greeted:
            self.greeted = True
            if self.refuse_at == "greeting" and str(status).startswith("220 "):
                status = self._refusal("greeting")
        await super().push(status)

    async def smtp_EHLO(self, hostname):
        if self.refuse_at == "ehlo":
            await self.push(self._refusal("ehlo"))
            return
        await super().smtp_EHLO(hostname)

    async def smtp_STARTTLS(self, arg):
        if self.refuse_at == "starttls":
            await self.push(self._refusal("starttls"))
            return
        await super().smtp_STARTTLS(arg)


class Staller(asyncio.Protocol):
    """Accepts the connection and then says nothing at all."""

    def connection_made(self, transport):
        self.transport = transport


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument(
        "--fail-at", choices=["greeting", "ehlo", "starttls", "mail", "rcpt", "data"]
    )
    p.add_argument("--auth")
    p.add_argument("--code", type=int, default=451)
    p.add_argument("--stall", action="store_true")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--keep-refused", action="store_true")
    p.add_argument("--one-per-connection", action="store_true")
    p.add_argument("--refuse-rcpt", action="append", default=[])
    p.add_argument("--refuse-rcpt-times", type=int)
    p.add_argument("--no-smtputf8", action="store_true")
    p.add_argument("--no-8bitmime", action="store_true")
    a = p.parse_args()
    os.makedirs(a.store, exist_ok=True)
    refuse_rcpt = dict(item.rsplit("=", 1) for item in a.refuse_rcpt)
    handler = Handler(a.store, a.fail_at, a.code, a.one_per_connection, refuse_rcpt)
    handler.keep_refused = a.keep_refused
    handler.refuse_rcpt_times = a.refuse_rcpt_times
    auth = {}
    if a.auth:
        user, _, password = a.auth.partition(":")
        # AUTH without TLS is what the loopback tests want: silence aiosmtpd's warnings about it.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        auth = dict(
            authenticator=Authenticator(user, password),
            auth_required=True,
            auth_require_tls=False,
        )
    tls = None
    if a.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(a.tls_cert, a.tls_key)

    def factory():
        if a.stall:
            return Staller()
        return SetupRefusingSMTP(
            handler,
            refuse_at=a.fail_at,
            code=a.code,
            no_8bitmime=a.no_8bitmime,
            hostname="test-smtp.invalid",
            tls_context=None if a.implicit_tls else tls,
            require_starttls=tls is not None and not a.implicit_tls,
            data_size_limit=10 * 1024 * 1024,
            enable_SMTPUTF8=not a.no_smtputf8,
            **auth,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=tls if a.implicit_tls else None
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
