"""What benchmarks print about the CPU next to their figures, read from /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

from models.hardware import cpu_description, cpu_flags, cpu_name

#: two processors' blocks, as Linux writes them under a hypervisor that hides the model
CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 167\n"
    "model name\t: Intel(R) Xeon(R) Processor\n"
    "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n\n"
    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu sse\n\n"
)


def test_the_description_names_family_model_and_the_deciding_features(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert cpu_name(cpuinfo) == "Intel(R) Xeon(R) Processor"
    assert cpu_flags(cpuinfo) == {
        "fpu", "sse", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"
    }  # fmt: skip
    assert cpu_description(cpuinfo) == (
        "Intel(R) Xeon(R) Processor "
        "(family 6 model 167; avx2 avx512f avx512_bf16 amx_bf16 amx_int8)"
    )


def test_a_cpu_without_avx2_or_a_cpuinfo_says_so(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Old\nflags\t\t: fpu sse sse2\n")
    assert cpu_description(cpuinfo) == "Old (no AVX2)"
    missing = tmp_path / "missing"
    assert cpu_flags(missing) is None
    assert cpu_description(missing) == cpu_name(missing) != ""
