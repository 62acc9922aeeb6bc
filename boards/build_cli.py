"""The ``loco-fpga build`` command (registered in ``loco_fpga/cli.py``; the work is in :mod:`.build`).

Only click is imported here, so ``loco-fpga --help`` stays fast; Amaranth and the tools load when the command runs.
"""

from __future__ import annotations

import json
import time

import click

__all__ = ["build", "EXIT_TIMING", "EXIT_TOOL"]

#: exit codes: 1 = timing not met (the report is still written), 3 = a tool failed; 2 (usage) as everywhere
EXIT_TIMING = 1
EXIT_TOOL = 3
BOARD_NAMES = ("icebreaker", "ulx3s-85f", "orangecrab-85f")


class _BuildFailed(click.ClickException):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code


@click.command()
@click.option("--board", type=click.Choice(BOARD_NAMES), required=True, help="the board to build for.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="TOML or JSON config of the network (default: the board's preset, docs/boards.md).")
@click.option("--freq", "freq_mhz", type=float, default=None,
              help="system clock in MHz (default: the board's, docs/boards.md); the PLL's nearest setting is used.")
@click.option("--baud", type=int, default=115200, show_default=True, help="UART rate.")
@click.option("--design", type=click.Choice(["accelerator", "echo", "link-test"]), default="accelerator",
              show_default=True, help="what goes behind the UART: the accelerator of the config; echo (every byte sent "
                                      "back: a UART bring-up test); link-test (the protocol with its test device).")
@click.option("--lanes", type=int, default=None, help="synapse lanes per layer engine (default: the board's).")
@click.option("--cluster-units", type=click.IntRange(min=1), default=None,
              help="LOCO: parallel units per cluster block, 1 ... K (default K; 1 is the smallest, "
                   "docs/hdl_learning.md).")
@click.option("--cluster-share", type=click.IntRange(min=1), default=1, show_default=True,
              help="LOCO: layers of equal width that share one cluster block, 1 ... L (fewer logic cells; a shared "
                   "layer's update waits for the layers before it in its block, docs/hdl_learning.md).")
@click.option("--cluster-impl", type=click.Choice(["parallel", "micro"]), default="parallel", show_default=True,
              help="LOCO: the cluster blocks' form: parallel units, or the microcoded datapath (a fraction of the "
                   "logic and one multiplier, many more cycles; docs/hdl_learning.md).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="build folder (default: build/<board>).")
@click.option("--seed", type=int, default=None,
              help="nextpnr placement seed (default: the board's, docs/boards.md; 1 for most).")
@click.option("--nextpnr-args", default="",
              help='more nextpnr options, e.g. "--router router2" (recorded in the report).')
@click.option("--timeout", "timeout_min", type=click.FloatRange(min=0, min_open=True), default=None,
              help="stop any one tool (Yosys, nextpnr, the packer) that runs longer than this many minutes: exit "
                   "code 3 (default: no limit; a design at its part's limit can route for hours).")
@click.option("--json", "as_json", is_flag=True, help="print report.json on stdout instead of the summary.")
@click.option("-q", "--quiet", is_flag=True, help="no progress lines.")
def build(board, config_path, freq_mhz, baud, design, lanes, cluster_units, cluster_share, cluster_impl, out_dir, seed,
          nextpnr_args, timeout_min, as_json, quiet):
    """Build a bitstream of the accelerator for BOARD and check that it meets its clock.

    Writes <out>/top.bin (iCE40) or top.bit (ECP5), report.json (resources used/available, routed Fmax, clock,
    seed, tool versions, config) and summary.txt. Exit code 1 when timing is not met, 3 when a tool fails.
    Tools: the YoWASP wheels unless YOSYS, NEXTPNR_ICE40, ICEPACK, NEXTPNR_ECP5, ECPPACK name others.

    \b
    Examples:
      loco-fpga build --board icebreaker
      loco-fpga build --board ulx3s-85f --freq 60 --out build/ulx3s
    """
    from loco_fpga.config import load_config  # noqa: PLC0415

    from .build import build_board  # noqa: PLC0415
    from .synth import SynthesisError, TimingError  # noqa: PLC0415
    from .tops import BOARDS, Echo, board_inner  # noqa: PLC0415

    config = load_config(config_path) if config_path else None
    out_dir = out_dir or f"build/{board}"
    start = time.monotonic()

    def progress(text):
        if not quiet:
            click.echo(f"[{time.monotonic() - start:5.0f} s] {text}", err=True)

    try:
        if design == "accelerator":
            inner, config = board_inner(BOARDS[board], config, lanes=lanes, cluster_units=cluster_units,
                                        cluster_share=cluster_share, cluster_impl=cluster_impl)
        elif design == "echo":
            inner = Echo()
        else:
            from loco_fpga.hdl.link import LinkTestTop  # noqa: PLC0415
            inner = LinkTestTop()
        result = build_board(board, out_dir=out_dir, config=config, freq_mhz=freq_mhz, baud=baud, seed=seed,
                             inner=inner, progress=progress, nextpnr_args=nextpnr_args,
                             timeout=None if timeout_min is None else 60 * timeout_min)
    except TimingError as err:
        raise _BuildFailed(str(err), EXIT_TIMING) from None
    except SynthesisError as err:
        raise _BuildFailed(str(err), EXIT_TOOL) from None
    except ValueError as err:
        raise _BuildFailed(str(err), 2) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(result.summary())
        click.echo(f"report: {out_dir}/report.json")
