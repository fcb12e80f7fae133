"""A real MCP client (the official Python SDK, `mcp` on PyPI) driving `pfsync mcp` for tests/it/mcp.rs.

Usage: mcp_client.py stdio SCRIPT.json PFSYNC_BINARY [ARGS...]
       mcp_client.py http SCRIPT.json URL        (token in PFSYNC_MCP_TOKEN)

SCRIPT.json is a list of steps: {"list_tools": true} or {"call": NAME, "arguments": {...}}, optionally with
"repeat": N (the call is made N times and timed; "{i}" in a string argument becomes the repetition's
number). Prints one JSON line per step: the tools with their
schemas, or each call's isError, structuredContent and text.
"""

import asyncio
import json
import os
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def text_of(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def run(session, steps):
    await session.initialize()
    for step in steps:
        if step.get("list_tools"):
            tools = await session.list_tools()
            out = [
                {"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                if hasattr(t, "input_schema")
                else {"name": t.name, "description": t.description, "inputSchema": t.inputSchema}
                for t in tools.tools
            ]
            print(json.dumps({"tools": out}), flush=True)
            continue
        repeat = step.get("repeat", 1)
        times = []
        result = None
        for i in range(repeat):
            # "{i}" in a string argument becomes the repetition's number (distinct request ids).
            args = {
                k: (v.replace("{i}", str(i)) if isinstance(v, str) else v) for k, v in step.get("arguments", {}).items()
            }
            start = time.perf_counter()
            result = await session.call_tool(step["call"], args)
            times.append(time.perf_counter() - start)
        structured = getattr(result, "structured_content", None)
        if structured is None:
            structured = getattr(result, "structuredContent", None)
        is_error = getattr(result, "is_error", None)
        if is_error is None:
            is_error = getattr(result, "isError", None)
        print(
            json.dumps(
                {
                    "call": step["call"],
                    "isError": bool(is_error),
                    "structured": structured,
                    "text": text_of(result),
                    "seconds": times,
                }
            ),
            flush=True,
        )


async def main():
    mode, script = sys.argv[1], sys.argv[2]
    with open(script) as f:
        steps = json.load(f)
    if mode == "stdio":
        params = StdioServerParameters(command=sys.argv[3], args=sys.argv[4:], env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await run(session, steps)
    else:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = {"Authorization": "Bearer " + os.environ["PFSYNC_MCP_TOKEN"]}
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(sys.argv[3], http_client=http) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    await run(session, steps)


asyncio.run(main())
