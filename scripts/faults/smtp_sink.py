#!/usr/bin/env python3
"""A counting SMTP sink for the fault scripts (Python stdlib only, loopback only).

  smtp_sink.py PORT LOG

Accepts every message and appends one JSON line per message to LOG *before* answering 250:
{"message_id", "rcpt": [...], "subject", "text", "at"}. Stopping it (SIGTERM) is an outage;
starting it again on the same LOG continues the count, so `fault_load check` can tell mails
delivered once from mails delivered twice. Sessions idle for 30 s are closed.
"""
import asyncio
import email
import email.policy
import json
import sys
import time


async def line(reader):
    return await asyncio.wait_for(reader.readline(), 30)


async def session(reader, writer, log):
    async def reply(text):
        writer.write((text + "\r\n").encode())
        await writer.drain()

    try:
        await reply("220 fault-sink ESMTP")
        rcpt = []
        while True:
            raw = await line(reader)
            if not raw:
                return
            cmd = raw.decode("utf-8", "replace").strip()
            verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                await reply("250-fault-sink\r\n250-8BITMIME\r\n250 SMTPUTF8")
            elif verb in ("HELO", "NOOP"):
                await reply("250 ok")
            elif verb in ("MAIL", "RSET"):
                rcpt = []
                await reply("250 ok")
            elif verb == "RCPT":
                rcpt.append(cmd[cmd.find("<") + 1 : cmd.rfind(">")].lower())
                await reply("250 ok")
            elif verb == "DATA":
                await reply("354 go ahead")
                chunks = []
                while True:
                    data = await line(reader)
                    if not data:
                        return
                    if data in (b".\r\n", b".\n"):
                        break
                    chunks.append(data[1:] if data.startswith(b".") else data)
                msg = email.message_from_bytes(b"".join(chunks), policy=email.policy.default)
                text = ""
                for part in msg.walk():
                    if part.get_content_type() == "text/plain":
                        text = part.get_content()
                        break
                record = {
                    "message_id": str(msg.get("Message-ID", "")).strip(),
                    "rcpt": rcpt,
                    "subject": str(msg.get("Subject", "")),
                    "text": text,
                    "at": time.time(),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                rcpt = []
                await reply("250 queued")
            elif verb == "QUIT":
                await reply("221 bye")
                return
            else:
                await reply("500 unknown command")
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    log = open(path, "a", encoding="utf-8")
    server = await asyncio.start_server(lambda r, w: session(r, w, log), "127.0.0.1", port, reuse_address=True)
    print(f"smtp sink on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
