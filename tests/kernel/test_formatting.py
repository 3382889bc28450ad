import asyncio
import base64
import socket

import pytest
from aiohttp import web

import aopkit
import aopkit.formatting
import aopkit.http
from aopkit import (
    AudioBlock,
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from aopkit.formatting import (
    MediaError,
    inline,
    media_note,
    transcript_segments,
    transcript_text,
    truncate,
    unsupported_media_reason,
)
from aopkit.models import Capabilities

PNG = b"\x89PNG\r\n\x1a\n fake"


async def test_local_files_are_read_only_when_inlined(tmp_path):
    path = tmp_path / "cat.png"
    block = ImageBlock(URLSource(str(path)))  # the file need not exist when the message is made
    path.write_bytes(PNG)
    assert await inline(block.source) == ("image/png", base64.b64encode(PNG).decode())
    as_url = URLSource(path.as_uri())
    assert (await inline(as_url))[1] == base64.b64encode(PNG).decode()


async def test_missing_media_file_is_a_clear_error(tmp_path):
    with pytest.raises(MediaError, match=r"cannot read media file .*missing\.wav"):
        await inline(URLSource(str(tmp_path / "missing.wav")))


async def test_http_media_is_fetched_through_the_kernel_pool(kernel, serve):
    async def image(request):
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat", image)
    base = await serve(app)
    assert await inline(URLSource(f"{base}/cat"), kernel.pool) == (
        "image/png",
        base64.b64encode(PNG).decode(),
    )
    with pytest.raises(MediaError, match="HTTP 404"):
        await inline(URLSource(f"{base}/dog"), kernel.pool)


async def media_server(serve):
    """A server of bad media: one that stalls after its headers, one too long without saying
    so, one too long that says so."""

    async def stalled(request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(b"\x89PNG")
        await asyncio.sleep(60)
        return response

    async def endless(request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x" * 1000)
        return response

    async def declared(request):
        return web.Response(body=b"x" * 5000, content_type="image/png")

    app = web.Application()
    app.router.add_get("/stalled", stalled)
    app.router.add_get("/endless", endless)
    app.router.add_get("/declared", declared)
    return await serve(app)


async def test_bad_media_servers_are_clear_errors(kernel, serve, monkeypatch):
    monkeypatch.setattr(aopkit.http, "MEDIA_TIMEOUT", 0.3)
    monkeypatch.setattr(aopkit.formatting, "MAX_MEDIA_BYTES", 4000)
    base = await media_server(serve)
    with pytest.raises(MediaError, match=r"/stalled took more than 0\.3 s"):
        await inline(URLSource(f"{base}/stalled"), kernel.pool)
    with pytest.raises(MediaError, match=r"/endless is larger than 4000 bytes"):
        await inline(URLSource(f"{base}/endless"), kernel.pool)
    with pytest.raises(MediaError, match=r"/declared is larger than 4000 bytes"):
        await inline(URLSource(f"{base}/declared"), kernel.pool)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(MediaError, match=r"failed: ClientConnectorError"):
        await inline(URLSource(f"http://127.0.0.1:{port}/cat.png"), kernel.pool)
    with pytest.raises(MediaError, match=r"fetching http://\[ failed"):
        await inline(URLSource("http://["), kernel.pool)
    signed = f"http://user:pw-secret-1@127.0.0.1:{port}/cat.png?token=tok-secret-2"
    with pytest.raises(MediaError) as failed:
        await inline(URLSource(signed), kernel.pool)
    assert "secret" not in str(failed.value) and "/cat.png" in str(failed.value)
    assert kernel.pool.turn()._free == kernel.pool.limit  # every turn taken was given back


async def test_a_media_fetch_cancelled_mid_download_gives_its_turn_back(kernel, serve):
    base = await media_server(serve)
    fetching = asyncio.ensure_future(inline(URLSource(f"{base}/stalled"), kernel.pool))
    await asyncio.sleep(0.3)  # the headers came; the body stalls
    assert kernel.pool.turn()._free == kernel.pool.limit - 1
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    assert kernel.pool.turn()._free == kernel.pool.limit


async def test_a_media_file_too_large_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(aopkit.formatting, "MAX_MEDIA_BYTES", 100)
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * 101)
    with pytest.raises(MediaError, match=r"big\.png' is larger than 100 bytes"):
        await inline(URLSource(str(path)))
    path.write_bytes(b"x" * 100)  # at the limit
    assert (await inline(URLSource(str(path))))[1] == base64.b64encode(b"x" * 100).decode()


async def test_a_media_fetch_waits_for_a_turn(serve):
    async def image(request):
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat", image)
    base = await serve(app)
    async with aopkit.Kernel(environ={}, connections=1) as kernel:
        turns = kernel.pool.turn()
        await turns.acquire()  # a model call holds the only connection
        fetching = asyncio.ensure_future(inline(URLSource(f"{base}/cat"), kernel.pool))
        await asyncio.sleep(0.05)
        assert not fetching.done()
        turns.release()
        assert (await asyncio.wait_for(fetching, 5))[1] == base64.b64encode(PNG).decode()


async def test_base64_sources_pass_through():
    assert await inline(Base64Source("audio/wav", "UklGRg==")) == ("audio/wav", "UklGRg==")


def test_media_a_model_cannot_take_is_named_in_a_note():
    caps = Capabilities(media=frozenset({"image"}))
    video = VideoBlock(URLSource("https://example.test/v.mp4"))
    assert unsupported_media_reason(ImageBlock(URLSource("x.png")), caps) is None
    reason = unsupported_media_reason(video, caps)
    assert reason == "this model does not accept video"
    assert media_note(video, reason) == (
        "[video not shown to the model (this model does not accept video): "
        "https://example.test/v.mp4]"
    )
    assert "inline data" in media_note(AudioBlock(Base64Source("audio/wav", "")), "no audio")


def test_transcript_segments_keep_system_and_tool_messages_native():
    sys_msg = Msg("system", "be brief", "system")
    a, b = Msg("alice", "hi", "user"), Msg("bob", "hello", "assistant")
    call = Msg("bob", [ToolUseBlock("1", "f", {})], "assistant")
    result = Msg("tool", [ToolResultBlock("1", "f", "ok")], "user")
    c = Msg("carol", "done?", "user")
    segments = transcript_segments([sys_msg, a, b, call, result, c])
    assert segments == [sys_msg, [a, b], call, result, [c]]
    assert transcript_text([a, b]) == "alice: hi\nbob: hello"


def _turns(n):
    return [Msg("u", f"message {i}", "user") for i in range(n)]


def test_truncate_keeps_the_newest_and_every_system_message():
    system = Msg("system", "rules", "system")
    history = [system, *_turns(10)]
    kept = truncate(history, budget=45, count=lambda m: 10)
    assert kept[0] is system
    assert kept[1:] == history[-3:]
    assert truncate(history, budget=10_000) == history
    assert truncate(history, budget=0) == [system], "the system message is never dropped"


def test_truncate_never_separates_a_tool_call_from_its_results():
    call = Msg("a", [ToolUseBlock("c1", "f", {}), ToolUseBlock("c2", "g", {})], "assistant")
    r1 = Msg("t", [ToolResultBlock("c1", "f", "x" * 200)], "user")
    r2 = Msg("t", [ToolResultBlock("c2", "g", "y" * 200)], "user")
    after = Msg("a", "answer", "assistant")
    history = [*_turns(3), call, r1, r2, after]
    for budget in range(0, 400, 5):
        kept = truncate(history, budget)
        ids = {m.id for m in kept}
        assert ({call.id, r1.id, r2.id} <= ids) or not ({call.id, r1.id, r2.id} & ids), budget
        assert kept == history[len(history) - len(kept) :], "the kept history is a contiguous tail"
    assert truncate(history, budget=60) == [after]


def test_text_blocks_in_truncation_and_images_cost_something():
    msg = Msg("u", [TextBlock("hi"), ImageBlock(URLSource("a.png"))], "user")
    assert truncate([msg], budget=10) == []
    assert truncate([msg], budget=1000) == [msg]


def test_with_instruction_joins_or_makes_the_leading_system_message():
    from aopkit.formatting import with_instruction

    system, user = Msg("system", "Be brief.", "system"), Msg("u", "hi", "user")
    joined = with_instruction([system, user], "Answer in JSON.")
    assert joined[0].text == "Be brief.\n\nAnswer in JSON." and joined[0].id == system.id
    assert joined[1] is user and system.text == "Be brief.", "the input is not changed"
    made = with_instruction([user], "Answer in JSON.")
    assert [(m.role, m.text) for m in made] == [("system", "Answer in JSON."), ("user", "hi")]
    with_image = Msg("system", [TextBlock("Look:"), ImageBlock(URLSource("a.png"))], "system")
    assert with_instruction([with_image], "Be kind.")[0].blocks(TextBlock)[-1].text == "Be kind."
