"""Drives mailroom's MCP server with the official Python SDK (PyPI `mcp`),
a client nobody on this project wrote.

    python_sdk.py --transport stdio --mode legacy --command target/debug/mailroom [--env K=V ...]
    python_sdk.py --transport http  --mode modern --url http://127.0.0.1:PORT/mcp --key KEY

It connects in the protocol era asked for (legacy = the 2025-11-25
initialize handshake; modern = the SDK's default, which probes
`server/discover` and so speaks 2026-07-28, stateless), checks the negotiated
version and the server's identity, lists the tools, calls every email and
score tool (an invalid filter must come back as an isError result, not a
protocol error), reads both resources, gets both prompts, completes a
message id, and receives progress from a bulk reprocess. Any failed check
exits 1 with the reason; success prints one JSON line of what was seen.
"""

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

MESSAGE = (
    "From: Alice <alice@example.com>\r\n"
    "To: support@example.org\r\n"
    "Subject: {subject}\r\n"
    "Message-ID: <{tag}@example.com>\r\n"
    "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    "\r\n"
    "Hello, my invoice {tag} is wrong. Could you check it?\r\n"
)


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def structured(result, tool):
    check(not result.is_error, f"{tool} failed: {result.content}")
    check(isinstance(result.structured_content, dict), f"{tool} has no structured content")
    # The same JSON as text, for clients that read only text.
    text = json.loads(result.content[0].text)
    check(text == result.structured_content, f"{tool}: text and structured content differ")
    return result.structured_content


async def wait_processed(client, message_id):
    for _ in range(100):
        got = structured(await client.call_tool("message_get", {"id": message_id}), "message_get")
        if got["status"] == "processed":
            return got
        await asyncio.sleep(0.1)
    check(False, f"message {message_id} was not processed in 10 s")


async def scenario(client, mode, tag):
    seen = {}
    version = client.session.protocol_version
    if mode == "legacy":
        check(version == "2025-11-25", f"legacy mode negotiated {version}")
    else:
        check(version == "2026-07-28", f"modern mode negotiated {version}")
    seen["protocol_version"] = version
    info = client.session.server_info
    check(info is not None and info.name == "mailroom", f"server reports itself as {info}")

    tools = {t.name: t for t in (await client.list_tools()).tools}
    expected = {"messages_list", "message_get", "processing_status", "message_ingest",
                "messages_reprocess", "message_delete", "message_score", "score_learn"}
    check(expected <= set(tools), f"tools/list lacks {expected - set(tools)}")
    for tool in tools.values():
        check(tool.output_schema is not None, f"{tool.name} has no outputSchema")
        check(tool.annotations is not None and tool.annotations.read_only_hint is not None,
              f"{tool.name} has no readOnlyHint")
    seen["tools"] = sorted(tools)

    receipt = structured(await client.call_tool(
        "message_ingest", {"raw": MESSAGE.format(subject=f"Invoice {tag}", tag=tag)}), "message_ingest")
    check(receipt["duplicate"] is False, "a new message was called a duplicate")
    message_id = receipt["id"]
    again = structured(await client.call_tool(
        "message_ingest", {"raw": MESSAGE.format(subject=f"Invoice {tag}", tag=tag)}), "message_ingest")
    check(again["duplicate"] is True and again["id"] == message_id, "the same bytes twice were stored twice")

    detail = await wait_processed(client, message_id)
    check(detail["parsed"]["subject"] == f"Invoice {tag}", "the parsed view has the wrong subject")

    page = structured(await client.call_tool("messages_list", {"q": tag, "limit": 10}), "messages_list")
    check([m["id"] for m in page["items"]] == [message_id], f"search for {tag} found {page['items']}")
    bad = await client.call_tool("messages_list", {"status": "lost"})
    check(bad.is_error and "status" in bad.content[0].text, "an invalid filter was not an isError result")
    missing = await client.call_tool("message_get", {"id": "01a24200-0000-7000-8000-000000000000"})
    check(missing.is_error and "no message" in missing.content[0].text, "an unknown id was not an isError result")

    status = structured(await client.call_tool("processing_status", {}), "processing_status")
    check("current_queue_size" in status, "processing_status lacks current_queue_size")

    report = structured(await client.call_tool("message_score", {"id": message_id}), "message_score")
    check(isinstance(report["score"], (int, float)) and report["symbols"] is not None, "score report shape")
    learned = structured(await client.call_tool("score_learn", {"label": "ham", "id": message_id}), "score_learn")
    check(learned["learned"] == "ham", "score_learn did not learn ham")

    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    reprocessed = structured(await client.call_tool(
        "messages_reprocess", {"ids": [message_id], "status": ["processed"], "timeout_seconds": 30},
        progress_callback=on_progress), "messages_reprocess")
    check(reprocessed["requeued"] == 1 and reprocessed["processed"] == 1, f"reprocess: {reprocessed}")
    check(progress and progress[-1][0] == progress[-1][1] == 1.0, f"progress notifications: {progress}")
    seen["progress"] = len(progress)

    templates = (await client.list_resource_templates()).resource_templates
    check({t.uri_template for t in templates} >= {"mailroom://messages/{id}", "mailroom://messages/{id}/raw"},
          "resource templates")
    listed = (await client.list_resources()).resources
    check(any(r.uri == f"mailroom://messages/{message_id}" for r in listed), "resources/list lacks the message")
    raw = (await client.read_resource(f"mailroom://messages/{message_id}/raw")).contents[0]
    check(raw.mime_type == "message/rfc822" and tag in raw.text, "raw resource")
    parsed = (await client.read_resource(f"mailroom://messages/{message_id}")).contents[0]
    check(json.loads(parsed.text)["id"] == message_id, "JSON resource")

    prompts = {p.name for p in (await client.list_prompts()).prompts}
    check(prompts >= {"triage-inbox", "draft-reply"}, f"prompts: {prompts}")
    reply = await client.get_prompt("draft-reply", {"id": message_id, "tone": "friendly"})
    check(tag in reply.messages[0].content.text, "draft-reply does not quote the message")
    triage = await client.get_prompt("triage-inbox", {"limit": "5"})
    check(message_id in triage.messages[0].content.text, "triage-inbox does not list the message")
    completion = await client.complete({"type": "ref/prompt", "name": "draft-reply"},
                                       {"name": "id", "value": message_id[:20]})
    check(message_id in completion.completion.values, "completion of message ids")

    deleted = structured(await client.call_tool("message_delete", {"id": message_id}), "message_delete")
    check(deleted["deleted"] is True, "message_delete")
    gone = await client.call_tool("message_get", {"id": message_id})
    check(gone.is_error, "a deleted message can still be read")
    return seen


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], required=True)
    parser.add_argument("--mode", choices=["legacy", "modern"], required=True)
    parser.add_argument("--command")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--tag", default="T1")
    args = parser.parse_args()
    if args.transport == "stdio":
        env = dict(item.split("=", 1) for item in args.env)
        server = StdioServerParameters(command=args.command, args=["mcp"], env=env)
    else:
        headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
        server = streamable_http_client(args.url, http_client=httpx2.AsyncClient(headers=headers, timeout=60))
    sdk_mode = "legacy" if args.mode == "legacy" else "auto"
    async with Client(server, mode=sdk_mode, read_timeout_seconds=60) as client:
        seen = await scenario(client, args.mode, args.tag)
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main())
