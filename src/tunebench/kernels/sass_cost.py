"""What the fused kernels of tunebench.kernels.fused_conv cost on an H100/H200 (sm_90), counted
without a GPU: each kernel compiled as a launch would compile it, by Triton's compiler and
ptxas, then ptxas's registers, spills and shared memory, the resident warps they allow, and
the warp-instructions one launch issues by its machine code (nvdisasm).

Used by `python -m tunebench.bench registers` only, never by training: a separate module,
so an edit here reruns no pipeline job (tunebench.pipeline.stages makes each rule depend on the
modules its command imports). Needs a process where the kernels were not defined under
TRITON_INTERPRET=1."""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile

from tunebench.kernels import fused_conv as fused_conv

if fused_conv.HAS_TRITON:
    import triton


def _loop_trips(name: str, kernel, tiles_: dict, N: int, C: int, H: int, W: int, CO: int) -> int:
    """How often one program runs its main (outermost run-time) loop's body: what
    compile_report multiplies the loop's instructions by."""
    if name == "wgrad":
        n_pix, block = fused_conv._wgrad_reduction(tiles_, N, H, W)
        return fused_conv._wgrad_split(n_pix, block)[1] // block
    row_kernels = (fused_conv._fwd_kernel_cl, fused_conv._dgrad_kernel_gcl)
    if kernel in row_kernels or (kernel is fused_conv._fwd_kernel_b and C % tiles_["BLOCK_R"] == 0):
        return 9  # one trip a tap; the slices of a tap are unrolled
    if name == "fwd":
        return triton.cdiv(9 * C, tiles_["BLOCK_R"])
    if name == "dgrad":
        return triton.cdiv(9 * CO, tiles_["BLOCK_R"])
    return 1


def _integer_arguments(kernel, constexprs: dict, K: int, N: int, C: int, H: int, W: int, CO: int) -> dict[str, int]:
    """The integer arguments fused_conv's launches pass `kernel` for contiguous population
    tensors of these sizes (x (K, N, C, H, W) or its channels-last copy, weight (K, CO, C,
    3, 3), bias (K, CO)): what Triton's JIT specialises on at run time."""
    PH, PW = H // 2, W // 2
    sizes = dict(N=N, C=C, H=H, W=W, CO=CO, PH=PH, PW=PW)
    channels_last = kernel in (fused_conv._fwd_kernel_cl, fused_conv._wgrad_kernel_cl)
    x_strides = dict(sxk=N * H * W * C, sxn=H * W * C, sxh=W * C, sxw=C) if channels_last else \
        dict(sxk=N * C * H * W, sxn=C * H * W, sxc=H * W, sxh=W, sxw=1)
    w_strides = dict(swk=CO * C * 9, swo=C * 9, swc=9, swh=3, sww=1)
    split, per_split = (fused_conv._wgrad_split(*fused_conv._wgrad_reduction(constexprs, N, H, W))
                        if "SPLIT" in kernel.arg_names else (1, 1))
    values = {**sizes, **x_strides, **w_strides, "sbk": CO, "sbo": 1, "SPLIT": split, "PIXELS_PER_SPLIT": per_split}
    return {a: values[a] for a in kernel.arg_names if not a.endswith("_ptr") and a not in constexprs}


# An H100/H200 SM (sm_90): 65,536 32-bit registers, allocated per thread in steps of 8;
# 228 KiB of shared memory; at most 64 resident warps and 32 programs.
SM90_REGISTERS, SM90_SHARED_BYTES, SM90_MAX_WARPS, SM90_MAX_PROGRAMS = 65536, 228 * 1024, 64, 32


def resident_warps(registers: int, shared_bytes: int, warps: int) -> int:
    """Warps one SM can hold of a kernel using `registers` per thread and `shared_bytes` per
    program of `warps` warps (an estimate: the occupancy limit from registers, shared memory
    and the hardware caps; fewer resident warps hide less memory latency)."""
    per_thread = -(-registers // 8) * 8
    programs = min(SM90_REGISTERS // (per_thread * 32 * warps), SM90_SHARED_BYTES // max(shared_bytes, 1),
                   SM90_MAX_PROGRAMS, SM90_MAX_WARPS // warps)
    return programs * warps


# The issue rate compile_report's time bound assumes: an H100 SXM's 132 SMs, each issuing at
# most one warp-instruction per cycle in each of its 4 schedulers, at its 1.98 GHz boost clock.
H100_WARP_INSTRUCTIONS_PER_S = 132 * 4 * 1.98e9


def sass_instruction_counts(sass: str) -> tuple[int, int]:
    """(instructions, instructions in the longest loop body) of one kernel's SASS as
    nvdisasm prints it: a loop is a branch back to an earlier label."""
    labels, count, longest = {}, 0, 0
    for line in sass.splitlines():
        label = re.match(r"^(\.L_x_\d+):", line)
        if label:
            labels[label.group(1)] = count
        elif re.match(r"\s+/\*[0-9a-f]{4,}\*/", line):  # an instruction: /*0a40*/ OPCODE ...
            back = re.search(r"\bBRA\b.*?(\.L_x_\d+)", line)
            if back and labels.get(back.group(1), count + 1) <= count:
                longest = max(longest, count + 1 - labels[back.group(1)])
            count += 1
    return count, longest


# How compile_report names the kernels of the other layouts: fwd-cl, wgrad-gcl, ...
_VARIANT_SUFFIX = {fused_conv._fwd_kernel_cl: "-cl", fused_conv._wgrad_kernel_cl: "-cl", fused_conv._wgrad_kernel_gcl: "-gcl",
                   fused_conv._dgrad_kernel_gcl: "-gcl", fused_conv._fwd_kernel_b: "-b",
                   fused_conv._wgrad_kernel_pooled: "-pooled", fused_conv._wgrad_kernel_gcl_row: "-gcl-row"} \
    if fused_conv.HAS_TRITON else {}

# Pointer arguments that do not take the data's dtype (the rest do; other arguments are i32).
_POINTER_TYPES = {"code_ptr": "*i8", "dw_ptr": "*fp32", "db_ptr": "*fp32"}
# ... and where one kernel's argument differs from the data's type
_KERNEL_POINTER_TYPES = {"_wgrad_kernel_pooled": {"x_ptr": "*fp32"}}


def compile_report(C: int, CO: int, H: int, W: int, dtype: str = "bf16", precision: str = "ieee",
                   N: int = 512, K: int = 128) -> list[dict]:
    """Compiles the three kernels of one C -> CO layer on H x W images at the current tiles
    for an H100/H200 (sm_90) with Triton's compiler and ptxas, no GPU needed, and reads ptxas's
    resource report: registers per thread (at most 255), bytes spilled to local memory
    (slow), shared memory per program. dtype: the data's Triton type (bf16 | fp32);
    precision: ieee | tf32. Specialised as Triton's JIT specialises a launch on K runs of
    N examples: integer arguments equal to 1 become constants, and pointers and integers
    divisible by 16 say so (which decides vectorised and asynchronous loads). From the
    machine code (nvdisasm): the kernel's instructions, its main loop's, and the
    warp-instructions one launch issues, an estimate that counts each loop trip alike.
    Needs a process where the kernels were not defined under TRITON_INTERPRET=1."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    arch = 90  # resident_warps' limits are sm_90's
    try:
        ptxas = get_ptxas(arch)
    except TypeError:  # older Triton: no arch argument
        ptxas = get_ptxas()
    ptxas = getattr(ptxas, "path", ptxas)
    nvdisasm = os.path.join(os.path.dirname(ptxas), "nvdisasm")  # Triton ships it beside ptxas
    rows = []
    launches = fused_conv._launches(C, CO, precision, H, W)
    for name, (kernel, constexprs, warps) in launches.items():
        integers = _integer_arguments(kernel, constexprs, K, N, C, H, W, CO)
        constants = {**constexprs, **{a: 1 for a, v in integers.items() if v == 1}}
        pointer_types = {**_POINTER_TYPES, **_KERNEL_POINTER_TYPES.get(kernel.__name__, {})}
        signature = {a: "constexpr" if a in constants else pointer_types.get(a, "*" + dtype) if a.endswith("_ptr")
                     else "i32" for a in kernel.arg_names}
        aligned = [a for a in kernel.arg_names if a.endswith("_ptr") or (a in integers and integers[a] % 16 == 0
                                                                            and a not in constants)]
        attrs = {(kernel.arg_names.index(a),): [["tt.divisibility", 16]] for a in aligned}
        compiled = triton.compile(ASTSource(kernel, signature, constants, attrs), target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": warps})
        with tempfile.TemporaryDirectory() as tmp:
            ptx = os.path.join(tmp, f"{name}.ptx")
            with open(ptx, "w") as f:
                f.write(compiled.asm["ptx"])
            report = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", ptx, "-o", os.path.join(tmp, "k.cubin")],
                                    capture_output=True, text=True, check=True).stderr
            cubin = os.path.join(tmp, "triton.cubin")
            with open(cubin, "wb") as f:
                f.write(compiled.asm["cubin"])
            sass = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=True).stdout
        registers = re.search(r"Used (\d+) registers", report)
        spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
        if not (registers and spills):
            raise RuntimeError(f"ptxas -v printed no resource report for {name}: {report[-500:]}")
        regs = int(registers.group(1))
        instructions, loop_body = sass_instruction_counts(sass)
        programs = math.prod(fused_conv._grid(name, constexprs, K, N, C, H, W, CO))
        per_program = instructions + loop_body * (_loop_trips(name, kernel, constexprs, N, C, H, W, CO) - 1)
        rows.append({"kernel": name + _VARIANT_SUFFIX.get(kernel, ""),
                     "C": C, "CO": CO, "H": H, "W": W,
                     "dtype": dtype, "input_precision": precision, "warps": warps,
                     "warps_per_sm": resident_warps(regs, int(compiled.metadata.shared), warps),
                     "blocks": {k: v for k, v in constexprs.items() if k.startswith("BLOCK_")},
                     "registers": regs, "spill_store_bytes": int(spills.group(1)),
                     "spill_load_bytes": int(spills.group(2)), "shared_bytes": int(compiled.metadata.shared),
                     "cubin_bytes": len(compiled.asm["cubin"]),
                     # Hopper's warpgroup MMA (wgmma) needs 64+ rows a warpgroup; smaller dots
                     # fall back to Ampere's mma.sync. cp.async: loads pipelined through shared memory.
                     "mma": "wgmma" if "wgmma.mma_async" in compiled.asm["ptx"]
                     else "mma.sync" if "mma.sync" in compiled.asm["ptx"] else "none",
                     "async_copies": compiled.asm["ptx"].count("cp.async."),
                     # An estimate of the launch's work from the machine code: its instructions,
                     # those of its main loop once a trip, and so the warp-instructions one
                     # launch on K runs x N examples issues (each program's warps run each).
                     "sass_instructions": instructions, "loop_instructions": loop_body,
                     "warp_instructions": programs * warps * per_program,
                     # launched where the layer's input takes no gradient (the first: the data)
                     "launched_without_dx": name == "fwd" or name in fused_conv._launched(launches, need_dx=False)})
    return rows
