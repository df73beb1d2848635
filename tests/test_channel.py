"""The master <-> worker channel on uvloop: messages and descriptors in order, and a
close while a receive or a send waits on the descriptor (the supervisor's teardown of a
retired worker) ends the wait with ChannelClosed instead of aborting the loop."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from haproxyd.channel import Channel, ChannelClosed


def run(coro) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def test_messages_and_descriptors_arrive_in_order():
    async def main() -> None:
        a, b = (Channel(s) for s in Channel.pair())
        with socket.socket() as listener:
            await a.send({"op": "one"})
            await a.send({"op": "two", "nfds": 1}, [listener.fileno()])
            assert (await b.recv())[0] == {"op": "one"}
            message, sockets = await b.recv()
            assert message["op"] == "two" and len(sockets) == 1
            assert sockets[0].family == listener.family
            sockets[0].close()
        a.close()
        with pytest.raises(ChannelClosed):
            await b.recv()  # the peer is gone
        b.close()

    run(main())


def test_close_while_a_receive_waits_ends_it_cleanly():
    async def main() -> None:
        a, b = (Channel(s) for s in Channel.pair())
        waiting = asyncio.create_task(b.recv())
        await asyncio.sleep(0)  # the receive is now registered with the loop
        assert not waiting.done()
        b.close()
        with pytest.raises(ChannelClosed):
            await waiting
        # The loop polls on: new descriptors (the same number, maybe) work.
        c, d = (Channel(s) for s in Channel.pair())
        await c.send({"op": "after"})
        assert (await d.recv())[0] == {"op": "after"}
        for channel in (a, c, d):
            channel.close()

    run(main())


def test_close_while_a_send_waits_ends_it_cleanly():
    async def main() -> None:
        a, b = (Channel(s) for s in Channel.pair())
        big = {"op": "fill", "data": "x" * (8 << 20)}  # more than both socket buffers
        sending = asyncio.create_task(a.send(big))
        for _ in range(100):
            await asyncio.sleep(0)
            if a._writer is not None:  # waiting for room on the descriptor
                break
        assert a._writer is not None and not sending.done()
        a.close()
        with pytest.raises(ChannelClosed):
            await sending
        b.close()

    run(main())
