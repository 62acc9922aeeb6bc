"""cocotb drivers for ``amaranth.lib.stream`` ports: a source with random idle cycles and a sink with
random back-pressure (STYLE §7). Port names follow the harness: ``<name>__valid/ready/payload``."""

from __future__ import annotations

import random

from cocotb.triggers import ReadOnly, RisingEdge


class StreamSource:
    """Drives ``<name>__payload``/``__valid`` from a list of integer payloads, idling at random.

    ``idle`` is the probability of inserting an idle cycle before each transfer. Valid never waits on
    ready: once raised, valid and payload stay until the transfer happens.
    """

    def __init__(self, dut, name: str, clk, *, idle: float, rng: random.Random):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk, self.idle, self.rng = clk, idle, rng
        self.valid.value = 0
        self.sent = 0

    async def send(self, payloads) -> None:
        for word in payloads:
            while self.rng.random() < self.idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = int(word)
            while True:
                await ReadOnly()                  # settled: ready may depend on valid
                transfer = bool(self.ready.value)
                await RisingEdge(self.clk)        # the edge that transfers (or not)
                if transfer:
                    break
            self.sent += 1
        self.valid.value = 0


class StreamSink:
    """Collects ``<name>__payload`` on every transfer, dropping ready at random (back-pressure)."""

    def __init__(self, dut, name: str, clk, *, stall: float, rng: random.Random):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk, self.stall, self.rng = clk, stall, rng
        self.ready.value = 0
        self.received: list[int] = []

    async def collect(self, count: int) -> list[int]:
        """Run until ``count`` transfers have been seen; returns their payloads in order."""
        while len(self.received) < count:
            self.ready.value = 0 if self.rng.random() < self.stall else 1
            await ReadOnly()
            if self.valid.value and self.ready.value:
                self.received.append(self.payload.value.to_unsigned())
            await RisingEdge(self.clk)
        self.ready.value = 0
        return self.received
