"""Q formats: rounding modes, saturation at both limits, the divider and square root, config checks."""

import numpy as np
import pytest

from loco_fpga.config import Config, ConfigError, FixedConfig
from loco_fpga.qformat import QFormat, check_config, div_trunc, formats, isqrt, narrow, shift_round


def _fixed_cfg(**changes):
    base = {"network": {"arch": (64, 32, 10)}, "spiking": {"enabled": True, "steps": 16},
            "fixed": {"enabled": True}}
    for k, v in changes.items():
        base.setdefault(k, {}).update(v)
    return Config().replace(**base)


def test_format_limits():
    f = QFormat("w", True, 8, 4)
    assert (f.min, f.max) == (-128, 127) and f.lsb == 1 / 16
    u = QFormat("x", False, 9, 8)
    assert (u.min, u.max) == (0, 511)
    assert f.from_float(1.03) == 16 and f.from_float(100.0) == 127 and f.from_float(-100.0) == -128
    assert f.from_float(-0.03125) == 0  # −0.5 LSB rounds half up to 0


def test_rounding_modes_by_hand():
    x = np.array([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6], dtype=np.int64)  # /4 = -1.5 .. 1.5
    half_up = [-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2]   # round(x/4), ties towards +inf
    trunc = [-2, -2, -1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1]    # floor(x/4)
    np.testing.assert_array_equal(shift_round(x, 2, "half-up"), half_up)
    np.testing.assert_array_equal(shift_round(x, 2, "trunc"), trunc)
    np.testing.assert_array_equal(shift_round(x, -3), x * 8)
    # stochastic: floor((x + r) / 4) with r in [0, 4): r = 0 is floor, r = 3 is ceil
    np.testing.assert_array_equal(shift_round(x, 2, "stochastic", np.zeros_like(x)), trunc)
    np.testing.assert_array_equal(shift_round(x, 2, "stochastic", np.full_like(x, 3)), -((-x) // 4))


def test_stochastic_rounding_is_unbiased():
    from loco_fpga.golden_model.prng import ENCODER, XorShift32Bank
    bank = XorShift32Bank(0, ENCODER, np.arange(20000))
    x = np.full(20000, 5, dtype=np.int64)                    # 5/16 = 0.3125 of an LSB after >> 4
    r = bank.top_bits(4)
    assert abs(shift_round(x, 4, "stochastic", r).mean() - 5 / 16) < 0.01


def test_every_format_saturates_at_both_limits_never_wraps():
    fm = formats(_fixed_cfg())
    for f in fm.all():
        for mode in ("half-up", "trunc", "stochastic"):
            # same scale: only saturation acts; one past each limit, and far past it
            vals = np.array([f.max + 1, f.max, f.min, f.min - 1, 4 * (f.max // 4) + 4 * (f.max // 4)],
                            dtype=np.int64)
            got = narrow(vals, f.frac, f, mode, np.zeros(5, dtype=np.int64))
            np.testing.assert_array_equal(got, [f.max, f.max, f.min, f.min if f.signed else 0, f.max],
                                          err_msg=f.name)
            if f.bits <= 59:  # from three more fraction bits: values just past the limits after rounding
                wide = np.array([(f.max << 3) + 7, (f.min << 3) - 8, -(1 << 60)], dtype=np.int64)
                got = narrow(wide, f.frac + 3, f, mode, np.full(3, 7, dtype=np.int64))
                np.testing.assert_array_equal(got, [f.max, f.min, f.min], err_msg=f.name)


def _restoring_divide(a, b, bits=64):
    # bit-serial restoring division of |a| by b > 0, sign applied afterwards (sign-magnitude divider)
    n, q, r = abs(a), 0, 0
    for i in range(bits - 1, -1, -1):
        r = (r << 1) | ((n >> i) & 1)
        if r >= b:
            r -= b
            q |= 1 << i
    return -q if a < 0 else q


def _restoring_sqrt(a):
    # digit-by-digit (restoring) square root
    res, bit = 0, 1 << 62
    while bit > a:
        bit >>= 2
    while bit:
        if a >= res + bit:
            a -= res + bit
            res = (res >> 1) + bit
        else:
            res >>= 1
        bit >>= 2
    return res


def test_divider_and_square_root_match_bit_serial_algorithms():
    rng = np.random.default_rng(0)
    a = rng.integers(-2**46, 2**46, size=300)
    b = rng.integers(1, 2**30, size=300)
    got = div_trunc(a, b)
    for ai, bi, qi in zip(a, b, got):
        assert qi == _restoring_divide(int(ai), int(bi))
    for v in list(rng.integers(0, 2**62, size=300)) + [0, 1, 2, 3, 4, 2**62 - 1]:
        assert isqrt(int(v)) == _restoring_sqrt(int(v))


@pytest.mark.parametrize("changes, fragment", [
    ({"fixed": {"acc_bits": 20}}, "fixed.acc_bits = 20: a sum of 65 weights of 16 bits plus noise needs 24 bits"),
    ({"fixed": {"update_acc_bits": 30}}, "fixed.update_acc_bits = 30: the product g·v⊥ needs"),
    ({"rule": {"sigma": 0.03}}, "rule.sigma = 0.03: must be a power of two"),
    ({"rule": {"sigma": 2.0**-14}}, "is below one weight LSB"),
    ({"spiking": {"steps": 12}}, "spiking.steps = 12: must be a power of two"),
    ({"rule": {"proto_lr": 0.03}}, "rule.proto_lr = 0.03"),
    ({"rule": {"ridge": 1e-9}}, "fixed.h_frac = 14: cannot represent rule.ridge"),
    ({"rule": {"name": "bp"}}, "rule.name = 'bp': the fixed-point model implements np, loco, dfa and lls"),
    ({"fixed": {"vperp_frac": 3}}, "fixed.vperp_frac = 3: must be >= log2(spiking.steps) = 4"),
    ({"fixed": {"h_bits": 31, "h_frac": 14}}, "fixed.h_bits = 31: the sum of 8 products"),
    ({"fixed": {"g_frac": 36, "g_bits": 40, "update_acc_bits": 60}}, "stochastic rounding of the update drops"),
])
def test_config_cross_checks_name_field_and_value(changes, fragment):
    with pytest.raises(ConfigError) as info:
        _fixed_cfg(**changes)
    assert fragment in str(info.value)


@pytest.mark.parametrize("field, value, fragment", [
    ("weight_frac", 16, "fixed.weight_frac = 16: must be < fixed.weight_bits (16)"),
    ("update_rounding", "nearest", "fixed.update_rounding = 'nearest'"),
    ("h_bits", 40, "fixed.h_bits = 40: must be <= 31"),
    ("membrane_bits", 8, "fixed.membrane_bits = 8: must be >= fixed.weight_bits"),
])
def test_fixed_section_field_checks(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        FixedConfig(**{field: value})
    assert fragment in str(info.value)


def test_defaults_and_presets_pass_the_checks_and_round_trip():
    from loco_fpga.config import PRESETS, preset
    cfg = _fixed_cfg()
    check_config(cfg)
    assert Config.from_dict(cfg.to_dict()) == cfg
    for name in PRESETS:
        p = preset(name)
        assert p.fixed.enabled and p.spiking.enabled
        assert Config.from_dict(p.to_dict()) == p
    with pytest.raises(ConfigError, match="unknown preset 'zynq'"):
        preset("zynq")
