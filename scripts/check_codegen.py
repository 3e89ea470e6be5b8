#!/usr/bin/env python3
"""Codegen check: reads the machine code of the crate's kernels and fails on what
makes them slow on machines we may not have.

What it does, in order:

1. Builds the release library (`cargo build --release --lib`) and disassembles the
   `.rlib` with GNU objdump (`-d -r -C -l --inlines`, so every instruction carries
   its source line and the chain of functions inlined into it, and every call its
   relocation). The rlib is used rather than an example binary because every
   `KernelOp` of the crate is monomorphised inside the crate, so all of them are in
   its object code, while the linker drops from a binary whatever that binary does
   not reach. To make sure nothing was missed, every `impl ... KernelOp for X` in
   `src/` must be found inlined into at least one avx512 and one avx2 entry point.
2. Gather/scatter: fails when a `vgather*`, `vscatter*`, `vpgather*` or `vpscatter*`
   instruction appears in any function of the crate (any ISA), printing the function,
   the op it runs, the offset, the instruction and the source lines it came from.
3. Out-of-line intrinsics: fails when a crate function calls a `core::core_arch`
   intrinsic instead of inlining it: that code was compiled without the ISA's
   `#[target_feature]` (a closure does not inherit it), so each vector operation is a
   function call through memory.
4. Microkernel k-loops: builds the control-flow graph of each kernel function
   (`backprop::kernel::*`, `backprop::gemm::*` and every trait method they run),
   finds its natural loops (back edges to a dominating block), and keeps the
   innermost loops that carry at least 8 vector registers through vfmadd*ps alone
   (the register tile's accumulators) and load A and B. For each such loop it
   derives the FMAs per iteration, the k steps per iteration (FMAs per accumulator)
   and the register tile (broadcasts and B loads per k step), and fails when the
   body touches the stack (a memory operand on %rsp, or on %rbp in a function that
   keeps a frame pointer: a spill or reload) or holds anything but: the FMAs,
   vbroadcastss from memory (A), vmovups/vmovaps loads into a register, masked or
   not, and vmaskmovps loads (B), loop control (add, sub, inc, dec, lea, cmp, test
   and mov between general registers, conditional jumps and jumps inside the
   loop), nops and software prefetches.
   Identical loops in several monomorphised copies are reported once, with the ops
   they belong to. The copies are counted, and more than `KLOOP_BUDGET` fails: each
   is a tile body inlined at one more call site, and the crate's compile time grows
   faster than their number.
5. Throughput: runs each k-loop through llvm-mca (Debian's llvm-19) on
   skylake-avx512, znver4, znver3 and the host's model (`-mcpu=native` resolved
   through `llvm-mca-19 --version`). Each model is checked first: 24 vfmadd231ps per
   iteration on zmm (independent chains) and on ymm (12 chains, two FMAs each) give
   its cycles per FMA, which must agree with the documented hardware (two 512-bit
   FMA ports on Skylake-SP, 512-bit FMAs double-pumped on Zen 4, two 256-bit FMA
   ports on AVX2 cores) and which is the bound; and an ideal k step of the loop's
   tile (loads, broadcasts, FMAs, nothing else) must come out at that bound, as it
   does on the hardware. A k-loop fails when its predicted cycles per k step exceed
   FMAs-per-k-step × cycles-per-FMA by more than 10 % on a model that passed its
   checks; on one that did not, the prediction is shown with `?` and not enforced.
   zmm loops are skipped on models without AVX-512.

`--self-test` runs the detectors on small assembly snippets built in below
(assembled with `as`, disassembled with objdump, so the real parsing path is
tested) and asserts their verdicts. `--objdump-file` checks a saved disassembly
instead of building.

Standard library only. Exit status: 0 pass, 1 check failed, 2 usage/tool error.
"""

import argparse
import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def die(msg):
    """A usage or tool error (exit status 2, not a failed check)."""
    print(f"check_codegen: {msg}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- parsing

HEADER_RE = re.compile(r"^([0-9a-f]+) <(.+)>:$")
INSN_RE = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
INLINED_RE = re.compile(r"^inlined by (.+):(\d+)(?: \(discriminator \d+\))? \((.*)\)$")
LOC_RE = re.compile(r"^(/\S*|\S+\.rs):(\d+)(?: \(discriminator \d+\))?$")
RELOC_RE = re.compile(r"^\s+([0-9a-f]+): (R_X86_64_\w+)\s+(\S+)$")
NAME_RE = re.compile(r"^([^\s/].*?)(?:\(\))?:$")
TARGET_RE = re.compile(r"^([0-9a-f]+) <")
PREFIXES = {"lock", "rep", "repz", "repnz", "repe", "repne", "notrack", "bnd", "data16", "cs", "ds"}
VREG_RE = re.compile(r"%([xyz])mm(\d+)")


class Insn:
    """One disassembled instruction with its source location."""

    __slots__ = ("addr", "text", "mnem", "ops", "frames")

    def __init__(self, addr, text, frames):
        self.addr = addr
        self.text = text.split("#")[0].rstrip()
        words = self.text.split(None, 1)
        while len(words) > 1 and words[0] in PREFIXES:
            words = words[1].split(None, 1)
        self.mnem = words[0] if words else ""
        self.ops = words[1].strip() if len(words) > 1 else ""
        # ((file, line, function containing that line), ...), innermost first:
        # the source line, then each call site it was inlined into.
        self.frames = frames

    def target(self):
        """Direct branch target address, or None."""
        m = TARGET_RE.match(self.ops)
        return int(m.group(1), 16) if m else None

    def operands(self):
        """AT&T operands (source first, destination last), split at top-level commas."""
        out, depth, cur = [], 0, ""
        for ch in self.ops:
            if ch in "({":
                depth += 1
            elif ch in ")}":
                depth -= 1
            if ch == "," and depth == 0:
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            out.append(cur.strip())
        return out


class Function:
    """One symbol's instructions."""

    def __init__(self, name):
        self.name = name
        self.insns = []
        self.relocs = []  # (offset, symbol) with `objdump -r`

    def isa(self):
        """The kernel path of an ISA entry point (or of a function in an ISA file)."""
        n = self.name
        if "backprop::kernel::avx512::" in n:
            return "avx512"
        if "backprop::kernel::avx2::" in n:
            return "avx2"
        if "backprop::kernel::dispatch::run" in n or "backprop::kernel::portable::" in n:
            return "portable"
        return None


def parse_objdump(lines):
    """Parses `objdump -d -C [-l --inlines]` output (a string or an iterable of
    lines) into functions."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    funcs, cur = [], None
    loc, name, frames, pending, fresh = None, "", (), [], False
    interned = {}
    for line in lines:
        line = line.rstrip("\n")
        m = INSN_RE.match(line)
        if m and cur is not None:
            if fresh or pending:
                frames = ((loc + (name,),) if loc else ()) + tuple(pending)
                frames = interned.setdefault(frames, frames)
                pending, fresh = [], False
            cur.insns.append(Insn(int(m.group(1), 16), m.group(2), frames))
            continue
        m = RELOC_RE.match(line)
        if m and cur is not None:
            cur.relocs.append((int(m.group(1), 16), m.group(3)))
            continue
        m = INLINED_RE.match(line)
        if m:
            pending.append((m.group(1), int(m.group(2)), m.group(3)))
            continue
        m = HEADER_RE.match(line)
        if m:
            cur = Function(m.group(2))
            funcs.append(cur)
            loc, name, frames, pending, fresh = None, "", (), [], False
            continue
        m = LOC_RE.match(line)
        if m:
            loc, pending, fresh = (m.group(1), int(m.group(2))), [], True
            continue
        m = NAME_RE.match(line)
        if m:
            name = m.group(1)
    return funcs


def rel_src(path):
    """The crate-relative path of a source file, or None for std/dependency code."""
    if path.startswith(ROOT + "/"):
        return os.path.relpath(path, ROOT)
    if "/rustc/" in path or "/.cargo/" in path or "/registry/" in path:
        return None
    i = path.rfind("/src/")
    return path[i + 1:] if i >= 0 else None


def short_fn(name):
    """`run<backprop::kernel::avx512::Avx512, 12, 2>` → `run`; a legacy-mangled
    `_ZN8backprop6kernel6avx5128dispatch17h…E` → `dispatch`."""
    if name.startswith("_ZN"):
        parts, i = [], 3
        body = re.sub(r"\.llvm\.\d+$", "", name)
        while i < len(body) and body[i].isdigit():
            j = i
            while body[j].isdigit():
                j += 1
            n = int(body[i:j])
            parts.append(body[j:j + n])
            i = j + n
        parts = [x for x in parts if not re.fullmatch(r"h[0-9a-f]{16}", x)]
        name = parts[-1] if parts else name
        return name.replace("$u7b$", "{").replace("$u7d$", "}").lstrip("_")
    while True:
        stripped = re.sub(r"<[^<>]*>", "", name)
        if stripped == name:
            return name.split("::")[-1]
        name = stripped


def where(insn, depth=3):
    """The crate source lines of an instruction, innermost first:
    `src/gemm/pack.rs:41 (pack_a_panel) <- src/gemm/pack.rs:80 (pack_a) <- ...`."""
    out = []
    for f, ln, name in insn.frames:
        r = rel_src(f)
        if r:
            out.append(f"{r}:{ln} ({short_fn(name)})" if name else f"{r}:{ln}")
        if len(out) == depth:
            break
    return " <- ".join(out) if out else "(no crate source line)"


# --------------------------------------------------------------------------- ops

KERNELOP_IMPL_RE = re.compile(r"^\s*(?:unsafe\s+)?impl\b[^{]*\bKernelOp\s+for\s+([A-Za-z_]\w*)")


def kernel_op_impls(src_dir):
    """{rel path: [(line, op name)]} for every `impl ... KernelOp for X` in src/,
    except those in a file's `#[cfg(test)]` module (by the crate's convention the
    last item of a file): unit tests are not part of the release library."""
    out = collections.defaultdict(list)
    for dirpath, _, files in os.walk(src_dir):
        for fn in sorted(files):
            if not fn.endswith(".rs"):
                continue
            path = os.path.join(dirpath, fn)
            with open(path, encoding="utf-8") as fh:
                in_tests = False
                for i, line in enumerate(fh, 1):
                    if line.strip() == "#[cfg(test)]":
                        in_tests = True
                    m = KERNELOP_IMPL_RE.match(line)
                    if m and not in_tests:
                        out[os.path.relpath(path, ROOT)].append((i, m.group(1)))
    return out


def op_label(func, impls):
    """Which KernelOp a dispatch copy runs, from the inline frames: a frame named
    `dispatch<Op>`, else the frame named `run<...>` whose line lies in an
    `impl KernelOp for Op` block (the impl that starts last before that line)."""
    for insn in func.insns:
        for _, _, name in insn.frames:
            if name.startswith("dispatch<"):
                return simplify_type(name[len("dispatch<"):-1])
    for insn in func.insns:
        for f, ln, name in insn.frames:
            if not name.startswith("run<"):
                continue
            best = None
            for start, op in impls.get(rel_src(f), []):
                if start <= ln:
                    best = op
            if best:
                generic = name[4:-1].split(", ")[0]
                return f"{best}<{simplify_type(generic)}>" if "closure" in generic else best
    return None


def simplify_type(t):
    """`backprop::optim::Vectorized<backprop::optim::adam::{impl#3}::step::{closure#0}::
    {closure_env#0}>` → `Vectorized<adam::step::{closure#0}>`."""
    t = re.sub(r"::\{closure_env#\d+\}", "", t)
    t = re.sub(r"\{impl#\d+\}::", "", t)
    t = re.sub(r"backprop::(\w+::)*(?=\w+<)", "", t)
    t = re.sub(r"backprop::(\w+::)*?(?=\w+::\w+::\{)", "", t)
    return re.sub(r"^backprop::(\w+::)*", "", t)


def op_base(label):
    return label.split("<")[0] if label else None


# --------------------------------------------------------------------------- gather/scatter

GATHER_RE = re.compile(r"^vp?(gather|scatter)")


def find_gathers(funcs):
    hits = []
    for f in funcs:
        if "backprop::" not in f.name:
            continue
        for insn in f.insns:
            if GATHER_RE.match(insn.mnem):
                hits.append((f, insn))
    return hits


# --------------------------------------------------------------------------- out-of-line intrinsics

def intrinsic_name(symbol):
    """`_ZN4core9core_arch3x867avx512f15_mm512_fmadd_ps17h…E-0x4` → `_mm512_fmadd_ps`."""
    s = re.sub(r"[-+]0x[0-9a-f]+$", "", symbol)
    s = re.sub(r"17h[0-9a-f]{16}E$", "", s)
    m = re.search(r"(mm\d*_\w+)$", s)
    return "_" + m.group(1) if m else s


def find_outlined_intrinsics(funcs):
    """Calls from crate functions to SIMD intrinsics (`core::core_arch`). An
    intrinsic is only inlined into code compiled with its target feature; a call
    means the code around it lacks the ISA's `#[target_feature]` (a closure or a
    function that does not inherit it), so every vector operation goes through a
    function call and memory. Returns [(function, first call insn, calls, names)]."""
    out = []
    for f in funcs:
        if "backprop::" not in f.name:
            continue
        calls = [(off, sym) for off, sym in f.relocs if "core_arch" in sym]
        if not calls:
            continue
        first = max((i for i in f.insns if i.addr <= calls[0][0]), key=lambda i: i.addr,
                    default=f.insns[0] if f.insns else None)
        names = sorted({intrinsic_name(sym) for _, sym in calls})
        out.append((f, first, len(calls), names))
    return out


# --------------------------------------------------------------------------- CFG and loops

def is_branch(insn):
    return insn.mnem.startswith("j")


def is_terminator(insn):
    return insn.mnem == "jmp" or insn.mnem.startswith("ret") or insn.mnem in ("ud2", "hlt", "int3")


def build_cfg(insns):
    """Basic blocks as (start index, end index exclusive) and successor lists."""
    index = {ins.addr: i for i, ins in enumerate(insns)}
    leaders = {0}
    for i, ins in enumerate(insns):
        if is_branch(ins) or is_terminator(ins):
            if i + 1 < len(insns):
                leaders.add(i + 1)
            t = ins.target() if is_branch(ins) else None
            if t is not None and t in index:
                leaders.add(index[t])
    starts = sorted(leaders)
    blocks = [(s, starts[k + 1] if k + 1 < len(starts) else len(insns)) for k, s in enumerate(starts)]
    block_of = {s: k for k, (s, _) in enumerate(blocks)}
    succs = []
    for s, e in blocks:
        last = insns[e - 1]
        out = []
        if is_branch(last):
            t = last.target()
            if t is not None and t in index:
                out.append(block_of[index[t]])
        if not is_terminator(last) and e < len(insns):
            out.append(block_of[e])
        succs.append(out)
    return blocks, succs


def dominators(n, succs, roots):
    """Immediate dominators (Cooper, Harvey, Kennedy) with a virtual root `n`."""
    preds = [[] for _ in range(n + 1)]
    for u in range(n):
        for v in succs[u]:
            preds[v].append(u)
    for r in roots:
        preds[r].append(n)
    all_succ = succs + [list(roots)]
    order, seen, stack = [], [False] * (n + 1), [(n, 0)]
    seen[n] = True
    while stack:
        u, k = stack.pop()
        if k < len(all_succ[u]):
            stack.append((u, k + 1))
            v = all_succ[u][k]
            if not seen[v]:
                seen[v] = True
                stack.append((v, 0))
        else:
            order.append(u)
    rpo = order[::-1]
    num = {u: i for i, u in enumerate(rpo)}
    idom = [None] * (n + 1)
    idom[n] = n

    def intersect(a, b):
        while a != b:
            while num[a] > num[b]:
                a = idom[a]
            while num[b] > num[a]:
                b = idom[b]
        return a

    changed = True
    while changed:
        changed = False
        for u in rpo[1:]:
            new = None
            for p in preds[u]:
                if idom[p] is not None and p in num:
                    new = p if new is None else intersect(p, new)
            if new is not None and idom[u] != new:
                idom[u] = new
                changed = True
    return idom


def dominates(idom, a, b):
    while True:
        if a == b:
            return True
        if idom[b] is None or idom[b] == b:
            return False
        b = idom[b]


def innermost_loops(func):
    """Natural loops of a function that contain no other loop: lists of instructions."""
    insns = func.insns
    if not insns:
        return []
    blocks, succs = build_cfg(insns)
    n = len(blocks)
    has_pred = [False] * n
    for u in range(n):
        for v in succs[u]:
            has_pred[v] = True
    roots = [0] + [u for u in range(1, n) if not has_pred[u]]
    idom = dominators(n, succs, roots)
    preds = [[] for _ in range(n)]
    for u in range(n):
        for v in succs[u]:
            preds[v].append(u)
    loops = {}
    for u in range(n):
        for h in succs[u]:
            if idom[u] is not None and dominates(idom, h, u):
                body = loops.setdefault(h, {h})
                stack = [u]
                while stack:
                    x = stack.pop()
                    if x not in body:
                        body.add(x)
                        stack.extend(preds[x])
    result = []
    for h, body in loops.items():
        if any(h2 != h and h2 in body for h2 in loops):
            continue
        idx = sorted(i for b in body for i in range(*blocks[b]))
        result.append([insns[i] for i in idx])
    return result


# --------------------------------------------------------------------------- k-loop analysis

LOOP_CONTROL = {"add", "sub", "inc", "dec", "lea", "cmp", "test", "mov"}
GPR_RE = re.compile(r"^(%r\w+|%e\w+|\$\S+)$")


def vreg(op):
    m = VREG_RE.fullmatch(op)
    return (m.group(1), int(m.group(2))) if m else None


def base_mnem(m):
    """`addq` → `add`: strip an AT&T size suffix from integer mnemonics."""
    for c in LOOP_CONTROL:
        if m == c or (m.startswith(c) and len(m) == len(c) + 1 and m[-1] in "bwlq"):
            return c
    return m


def analyse_loop(loop, uses_frame_pointer):
    """Classifies an innermost loop. Returns None if it is not a microkernel k-loop,
    else a dict: width, fmas, k_steps, mr, nv, violations [(insn, reason)]."""
    fma_dst = collections.Counter()
    written_by_other = set()
    fmas = 0
    width = None
    for insn in loop:
        ops = insn.operands()
        dst = vreg(ops[-1]) if ops else None
        if insn.mnem.startswith("vfmadd") and insn.mnem.endswith("ps"):
            fmas += 1
            if dst:
                fma_dst[dst[1]] += 1
                width = width or dst[0]
        elif dst and insn.mnem not in ("cmp", "test") and not insn.mnem.startswith("vcmp"):
            written_by_other.add(dst[1])
    accumulators = {r for r in fma_dst if r not in written_by_other}
    if len(accumulators) < 8:
        return None
    k_steps = collections.Counter(fma_dst[r] for r in accumulators).most_common(1)[0][0]
    bcasts = loads = 0
    loop_addrs = {i.addr for i in loop}
    violations = []
    stack_re = re.compile(r"\((%rsp|%rbp)[,)]" if uses_frame_pointer else r"\(%rsp[,)]")
    for insn in loop:
        ops = insn.operands()
        mem = [o for o in ops if "(" in o]
        if stack_re.search(insn.ops) and base_mnem(insn.mnem) != "lea":
            violations.append((insn, "stack access (spill/reload)"))
            continue
        m = insn.mnem
        bm = base_mnem(m)
        if m.startswith("vfmadd") and m.endswith("ps"):
            # An FMA may take A as an embedded broadcast or B straight from memory.
            if mem and "{1to" in mem[0]:
                bcasts += 1
            elif mem:
                loads += 1
            continue
        if m == "vbroadcastss" and ops and "(" in ops[0] and vreg(ops[-1]):
            bcasts += 1
            continue
        if m in ("vmovups", "vmovaps") and ops and "(" in ops[0] and vreg(ops[-1].split("{")[0]):
            # A B load; masked (`{%kN}{z}`) for a partial strip read in place.
            loads += 1
            continue
        if m == "vmaskmovps" and len(ops) == 3 and "(" in ops[0] and vreg(ops[-1]):
            # AVX2's masked load: a partial strip of B read in place.
            loads += 1
            continue
        if m.startswith("j") and m != "jmp":
            continue
        if m == "jmp" and insn.target() in loop_addrs:
            continue
        if bm in LOOP_CONTROL and not mem and all(GPR_RE.match(o) for o in ops):
            continue
        if bm == "lea" and all(GPR_RE.match(o) for o in ops[1:]):
            continue
        if m.startswith("nop") or m.startswith("prefetch") or m == "xchg" and ops == ["%ax", "%ax"]:
            continue
        violations.append((insn, "not an FMA, A broadcast, B load or loop control"))
    if bcasts == 0 or loads == 0:
        # Accumulates without streaming A and B (the FMA peak probe): not a k-loop.
        return None
    return {
        "width": {"z": "zmm", "y": "ymm", "x": "xmm"}[width],
        "fmas": fmas,
        "k_steps": k_steps,
        "accumulators": len(accumulators),
        "mr": bcasts / k_steps,
        "nv": loads / k_steps,
        "violations": violations,
    }


def normalise(loop):
    """A key under which identical loops in different copies compare equal."""
    addrs = {i.addr for i in loop}
    out = []
    for insn in loop:
        if insn.mnem.startswith("j"):
            t = insn.target()
            out.append(f"{insn.mnem} {'.Lhead' if t in addrs else 'out'}")
        else:
            out.append(f"{insn.mnem} {insn.ops}")
    return tuple(out)


def uses_frame_pointer(func):
    head = [i.text for i in func.insns[:6]]
    return any(re.fullmatch(r"mov\s+%rsp,%rbp", t) for t in head)


def kernel_scope(func):
    return "backprop::kernel::" in func.name or "backprop::gemm::" in func.name


# --------------------------------------------------------------------------- llvm-mca

# Documented FMA throughput (cycles per vfmadd231ps) of the modelled cores, used
# only to decide whether a model can be trusted; the bound itself comes from the
# model's own calibration.
DOCUMENTED = {
    ("skylake-avx512", "zmm"): 0.5,  # two 512-bit FMA ports (ports 0+1 fused, port 5)
    ("skylake-avx512", "ymm"): 0.5,
    ("znver4", "zmm"): 1.0,  # 512-bit FMAs double-pumped on two 256-bit pipes
    ("znver4", "ymm"): 0.5,
    ("znver3", "ymm"): 0.5,
    ("znver2", "ymm"): 0.5,
    ("haswell", "ymm"): 0.5,
    ("skylake", "ymm"): 0.5,
}


def calibration_asm(width):
    if width == "zmm":
        return "\n".join(f"vfmadd231ps %zmm30,%zmm31,%zmm{i}" for i in range(24)) + "\n"
    return "\n".join(f"vfmadd231ps %ymm14,%ymm15,%ymm{i % 12}" for i in range(24)) + "\n"


def ideal_kstep_asm(width, mr, nv, unroll=4):
    """`unroll` k steps of an MR × NV-vector register tile fed from L1, with
    nothing else: NV B loads, MR A broadcasts, MR·NV independent FMAs per step.
    On the documented cores this runs at the FMA bound (Skylake-SP: a broadcast
    from memory is one load-port µop, two per cycle; Zen 4: measured on a Zen 4
    host at 1.00× the speed of the same FMAs without loads), so a model that
    predicts it far above the bound misprices loads or broadcasts and cannot be
    trusted on k-loops of that shape."""
    nregs = 32 if width == "zmm" else 16
    if mr * nv + nv + 1 > nregs:
        return None
    step = 64 if width == "zmm" else 32
    b0, bc = mr * nv, mr * nv + nv
    lines = []
    for u in range(unroll):
        lines += [f"vmovups {(u * nv + v) * step}(%rcx),%{width}{b0 + v}" for v in range(nv)]
        for i in range(mr):
            lines.append(f"vbroadcastss {4 * (u * mr + i)}(%rax),%{width}{bc}")
            lines += [f"vfmadd231ps %{width}{bc},%{width}{b0 + v},%{width}{i * nv + v}"
                      for v in range(nv)]
    return "\n".join(lines) + "\n"


def loop_asm(loop):
    """The loop body as llvm-mca input; every direct branch goes to the top."""
    lines = [".Lhead:"]
    for insn in loop:
        if insn.mnem.startswith("j"):
            t = insn.target()
            lines.append(f"{insn.mnem} .Lhead" if t is not None else insn.text)
        else:
            lines.append(insn.text.replace("\t", " "))
    return "\n".join(lines) + "\n"


class Mca:
    def __init__(self, exe, workdir, iterations=200):
        self.exe = exe
        self.workdir = workdir
        self.iterations = iterations
        self.count = 0

    def cycles_per_iteration(self, cpu, asm):
        self.count += 1
        path = os.path.join(self.workdir, f"mca{self.count}.s")
        with open(path, "w") as fh:
            fh.write(asm)
        r = subprocess.run(
            [self.exe, "-mtriple=x86_64-unknown-linux-gnu", f"-mcpu={cpu}",
             f"-iterations={self.iterations}", path],
            capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"llvm-mca -mcpu={cpu} failed on {path}:\n{r.stderr}")
        it = int(re.search(r"^Iterations:\s+(\d+)", r.stdout, re.M).group(1))
        cyc = int(re.search(r"^Total Cycles:\s+(\d+)", r.stdout, re.M).group(1))
        return cyc / it

    def host_cpu(self):
        r = subprocess.run([self.exe, "--version"], capture_output=True, text=True)
        m = re.search(r"Host CPU:\s*(\S+)", r.stdout)
        return m.group(1) if m else None


def host_has_avx512():
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " avx512f" in line for line in fh)
    except OSError:
        return False


# --------------------------------------------------------------------------- build

def build_rlib():
    cmd = ["cargo", "build", "--release", "--lib", "--message-format=json-render-diagnostics"]
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        die(f"cargo build failed ({r.returncode})")
    for line in r.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "backprop":
            for f in msg["filenames"]:
                if f.endswith(".rlib"):
                    return f
    die("cargo did not report the backprop rlib")


def disassemble(path, objdump):
    """Parsed functions of `objdump -d -r -C -l --inlines path`, streamed (the text is
    over 100 MB for the crate)."""
    cmd = [objdump, "-d", "-r", "--no-show-raw-insn", "-C", "-l", "--inlines", path]
    with tempfile.TemporaryFile(mode="w+") as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                              errors="replace") as proc:
            funcs = parse_objdump(proc.stdout)
        if proc.returncode != 0:
            err.seek(0)
            die(f"{' '.join(cmd)} failed:\n{err.read()}")
    return funcs


# --------------------------------------------------------------------------- the check

# Skylake-SP (two 512-bit FMA ports, like the AVX-512 Xeon measured), Zen 4, and
# Zen 3 (the AVX2 development machines); the host's model is added to these.
DEFAULT_CPUS = ("skylake-avx512", "znver4", "znver3")


def check(funcs, mca, tolerance, cpus=DEFAULT_CPUS, out=print, impls=None, require_ops=True):
    """Runs every detector on parsed functions; returns (failures, findings)."""
    impls = kernel_op_impls(os.path.join(ROOT, "src")) if impls is None else impls
    for f in funcs:
        f.op = op_label(f, impls) if f.isa() else None
    failures = []

    # Coverage: every KernelOp found in an avx512 and an avx2 entry point.
    kernels = [f for f in funcs if f.isa() in ("avx512", "avx2")]
    seen = collections.defaultdict(set)
    for f in kernels:
        if f.op:
            seen[op_base(f.op)].add(f.isa())
    out(f"kernel entry points: {sum(f.isa() == 'avx512' for f in funcs)} avx512, "
        f"{sum(f.isa() == 'avx2' for f in funcs)} avx2, "
        f"{sum(f.isa() == 'portable' for f in funcs)} portable monomorphised copies")
    if require_ops:
        names = sorted({op for lst in impls.values() for _, op in lst})
        for op in names:
            have = seen.get(op, set())
            missing = {"avx512", "avx2"} - have
            if missing:
                failures.append(f"op {op} has no {'/'.join(sorted(missing))} instantiation in "
                                f"the disassembly: its code was not checked")
        out("ops found per ISA: " + ", ".join(f"{op} ({'+'.join(sorted(seen.get(op, [])))})"
                                               for op in names))

    # Gather / scatter.
    hits = find_gathers(funcs)
    groups = collections.OrderedDict()
    for f, insn in hits:
        groups.setdefault((f.name, f.op, where(insn)), []).append(insn)
    for (name, op, loc), insns in groups.items():
        lst = ", ".join(f"+{i.addr:#x} {i.text}" for i in insns[:3])
        more = f" (+{len(insns) - 3} more)" if len(insns) > 3 else ""
        failures.append(f"gather/scatter in {name} [{op or '?'}] at {loc}: {lst}{more}")
    out(f"gather/scatter instructions in crate functions: {len(hits)}")

    # Intrinsics called out of line.
    outlined = find_outlined_intrinsics(funcs)
    for f, insn, n, names in outlined:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        failures.append(f"{n} out-of-line calls to SIMD intrinsics ({shown}) in {f.name}, first at "
                        f"+{insn.addr:#x} {where(insn) if insn else ''}: this code lacks the ISA's "
                        f"#[target_feature] (a closure does not inherit it), so every vector "
                        f"operation is a function call through memory")
    out(f"out-of-line SIMD intrinsic calls in crate functions: {sum(n for _, _, n, _ in outlined)}")

    # Microkernel k-loops.
    loops = collections.OrderedDict()
    for f in funcs:
        if not kernel_scope(f) and not f.op:
            continue
        fp = uses_frame_pointer(f)
        for loop in innermost_loops(f):
            info = analyse_loop(loop, fp)
            if info is None:
                continue
            key = (f.isa() or "?", normalise(loop))
            entry = loops.setdefault(key, {"info": info, "loop": loop, "copies": [], "func": f})
            entry["copies"].append((f, loop[0].addr))
    copies = sum(len(e['copies']) for e in loops.values())
    out(f"microkernel k-loops: {copies} in {len(loops)} distinct bodies "
        f"(budget {KLOOP_BUDGET})")
    if copies > KLOOP_BUDGET:
        failures.append(
            f"{copies} microkernel k-loops in the crate, over the budget of {KLOOP_BUDGET}: each "
            f"is a tile body (a microkernel and its store with every epilogue) inlined at one "
            f"more call site, and the build time grows faster than their number (see "
            f"KLOOP_BUDGET in scripts/check_codegen.py). Keep the tile call sites under each "
            f"KernelOp few (see `direct_strip` in src/gemm/loops.rs)")
    rows = []
    for n, ((isa, _), e) in enumerate(loops.items(), 1):
        info = e["info"]
        ops = sorted({(f.op or f.name) for f, _ in e["copies"]})
        branch = e["loop"][-1]
        label = f"L{n}"
        e["label"] = label
        first = e["copies"][0]
        out(f"  {label} {isa} {info['width']}: {info['fmas']} FMAs, {info['k_steps']} k steps "
            f"per iteration, tile {info['mr']:g}x{info['nv']:g} vectors, "
            f"{len(e['copies'])} {'copy' if len(e['copies']) == 1 else 'copies'}; ops {', '.join(ops)}; loop at {where(branch)}; "
            f"first copy {first[0].name} +{first[1]:#x}")
        e["known"] = known_reason(e["loop"])
        if e["known"]:
            out(f"     known ({e['known'][0]}): {e['known'][1]}")
        for insn, why in info["violations"]:
            msg = (f"k-loop {label} ({isa}, ops {', '.join(ops)}; e.g. {first[0].name} "
                   f"[{first[0].op or '?'}] +{insn.addr:#x}): {why}: {insn.text}  at {where(insn)}")
            if e["known"]:
                out(f"     known, not enforced: {msg}")
            else:
                failures.append(msg)
        rows.append((label, isa, info, e))

    # llvm-mca.
    if mca is not None and rows:
        failures += run_mca(mca, rows, tolerance, out, cpus)

    return failures, {"funcs": funcs, "gathers": hits, "loops": loops}


# Microkernel k-loops the whole crate may hold (22 in December 2026: 17 avx512, 5 avx2;
# the portable path's loops are not counted). Everything under a KernelOp is inlined
# into one function per ISA, so each tile call site adds a copy, and compile time grows
# faster than the count: a build with 92 copies took 14 minutes, one with 22 takes 30 s.
KLOOP_BUDGET = 32


# k-loops that are known to miss a rule, by a function in their inline chain, with the
# reason. Their findings are printed (marked "known") but do not fail the check; every
# other loop, including every packed microkernel, is held to all the rules. Keep this
# list short and each entry tied to an open piece of work.
KNOWN = {
    "direct_strip": (
        "the no-packing path (small products) reads A and/or B in place through their "
        "run-time strides. A with rows apart (accumulate_rows) is addressed from one base "
        "per four rows, kept opaque to the compiler so it cannot fold them back into a "
        "chain of additions (skylake-avx512 predicts 1.09x the FMA bound for 12x1 and "
        "1.15x for 12x2, sapphirerapids 1.00-1.01x); the four-times unrolled loop for "
        "unit-stride A is what the packed kernel runs. The AVX2 copies reload general "
        "registers, and since e868ee9 the AVX2 6x2 edge tile over a packed edge panel "
        "and a packed B strip (m = 5 mod 6 rows, B without unit column stride) spills "
        "accumulators: register allocation in the larger function, not measured"),
}


def known_reason(loop):
    """The KNOWN entry whose function is in the inline chain of any insn of `loop`."""
    for fn, why in KNOWN.items():
        if any(fn in where(insn, depth=8) for insn in loop):
            return fn, why
    return None


# LLVM CPU models of cores with AVX-512 (llvm-mca refuses zmm code on the others).
AVX512_MODELS = {"skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                 "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
                 "graniterapids", "znver4", "znver5"}


def run_mca(mca, rows, tolerance, out, cpus):
    """Calibrates each model, then predicts every k-loop; returns the failures."""
    failures = []
    host = mca.host_cpu()
    host_avx512 = host_has_avx512()
    models = list(cpus)
    out(f"\nllvm-mca: {mca.exe}; -mcpu=native is {host} here; this host "
        f"{'has' if host_avx512 else 'lacks'} AVX-512")
    if host and host not in models:
        models.append(host)

    def runs_on(cpu, width):
        # llvm-mca needs no AVX-512 hardware, but a model of an AVX2 core has no zmm.
        return width != "zmm" or cpu in AVX512_MODELS or (cpu == host and host_avx512)

    bound, trusted = {}, {}
    out("model check 1: 24 vfmadd231ps per iteration (zmm: 24 chains; ymm: 12 chains x 2), "
        "cycles per FMA = the model's FMA bound:")
    for cpu in models:
        for w in sorted({info["width"] for _, _, info, _ in rows}):
            if not runs_on(cpu, w):
                continue
            per = mca.cycles_per_iteration(cpu, calibration_asm(w)) / 24
            bound[(cpu, w)] = per
            doc = DOCUMENTED.get((cpu, w))
            ok = doc is None or abs(per - doc) <= 0.1 * doc
            trusted[(cpu, w)] = ok
            verdict = ("no documented figure" if doc is None else
                       f"hardware {doc:g}: " + ("agrees" if ok else "DIFFERS, model not trusted"))
            out(f"  {cpu:<16} {w}: {per:.3f}  ({verdict})")
    out("model check 2: an ideal k step of each tile (B loads, A broadcasts, FMAs only), "
        "cycles per k step against the bound:")
    for cpu in models:
        for w, mr, nv in sorted({(i["width"], i["mr"], i["nv"]) for _, _, i, _ in rows}):
            asm = ideal_kstep_asm(w, int(mr), int(nv)) if mr == int(mr) and nv == int(nv) else None
            if not runs_on(cpu, w) or asm is None:
                continue
            pred = mca.cycles_per_iteration(cpu, asm) / 4
            b = mr * nv * bound[(cpu, w)]
            ok = pred <= (1 + tolerance) * b
            trusted[(cpu, w, mr, nv)] = ok and trusted[(cpu, w)]
            out(f"  {cpu:<16} {w} {mr:g}x{nv:g}: {pred:.2f} vs bound {b:.2f} = {pred / b:.2f}x  "
                + ("(FMA-bound, as on the hardware)" if ok else
                   "(NOT FMA-bound, unlike the hardware: the model misprices the loads or "
                   "broadcasts; its k-loop predictions of this shape are shown, not enforced)"))
    out("")
    out(f"{'loop':<5} {'path':<7} {'FMA/it':>6} {'k/it':>4} {'FMA/k':>5} {'tile':>5}  "
        + "  ".join(f"{m + (' (host)' if m == host else ''):>23}" for m in models))
    out(f"{'':<5} {'':<7} {'':>6} {'':>4} {'':>5} {'':>5}  "
        + "  ".join(f"{'cyc/k  bound ratio':>23}" for _ in models))
    for label, isa, info, e in rows:
        w, mr, nv = info["width"], info["mr"], info["nv"]
        per_k = info["fmas"] / info["k_steps"]
        cells = []
        for cpu in models:
            if (cpu, w) not in bound:
                cells.append(f"{'skipped (no AVX-512)':>23}")
                continue
            pred = mca.cycles_per_iteration(cpu, loop_asm(e["loop"])) / info["k_steps"]
            b = per_k * bound[(cpu, w)]
            ratio = pred / b
            flag = ""
            if ratio > 1 + tolerance:
                if e.get("known"):
                    flag = "k"
                elif trusted.get((cpu, w, mr, nv), trusted[(cpu, w)]):
                    flag = "!"
                    failures.append(f"k-loop {label} ({isa}) on {cpu}: {pred:.2f} cycles per k step, "
                                    f"{ratio:.2f}x the FMA bound {b:.2f} (limit {1 + tolerance:.2f}x)")
                else:
                    flag = "?"
            cells.append(f"{pred:6.2f} {b:6.2f} {ratio:5.2f}{flag:1}".rjust(23))
        tile = f"{mr:g}x{nv:g}"
        out(f"{label:<5} {isa:<7} {info['fmas']:>6} {info['k_steps']:>4} {per_k:>5g} {tile:>5}  "
            + "  ".join(cells))
    out(f"cyc/k: llvm-mca cycles per k step; bound: FMAs per k step x the model's cycles per FMA; "
        f"tile: A broadcasts x B vectors per k step; ! more than {tolerance:.0%} over the bound "
        f"(fails); k over it, a known case (see KNOWN: reported, not enforced); ? over it on a "
        f"model that failed its check (reported, not enforced)")
    return failures


# --------------------------------------------------------------------------- self-test

FN_AVX512 = "_ZN8backprop6kernel6avx5128dispatch17h0123456789abcdefE"
FN_AVX2 = "_ZN8backprop6kernel4avx28dispatch17h0123456789abcdefE"


def kloop_asm(width, mr, nv, unroll, extra=None, frame_pointer=False, a_reg="%rax", masked=False):
    """A k-loop in the shape the kernels compile to: per k step, NV B loads
    (with `masked`, the last one masked as for a partial strip of B read in
    place), MR broadcasts, MR·NV FMAs into accumulators 0..MR·NV-1."""
    lanes_bytes = 64 if width == "zmm" else 32
    acc = mr * nv
    b0 = acc
    bc = acc + nv
    lines = []
    if frame_pointer:
        lines += ["push %rbp", "mov %rsp,%rbp"]
    lines += ["mov $64,%rcx", "1:"]
    for u in range(unroll):
        for v in range(nv):
            src = f"{u * nv * lanes_bytes + v * lanes_bytes}(%rdx)"
            if masked and v == nv - 1 and width == "zmm":
                lines.append(f"vmovups {src},%zmm{b0 + v}{{%k2}}{{z}}")
            elif masked and v == nv - 1:
                lines.append(f"vmaskmovps {src},%ymm15,%ymm{b0 + v}")
            else:
                lines.append(f"vmovups {src},%{width}{b0 + v}")
        for i in range(mr):
            lines.append(f"vbroadcastss {4 * (u * mr + i)}({a_reg}),%{width}{bc}")
            for v in range(nv):
                lines.append(f"vfmadd231ps %{width}{bc},%{width}{b0 + v},%{width}{i * nv + v}")
        if extra and u == 0:
            lines += extra
    lines += [f"add ${4 * mr * unroll},{a_reg}", f"add ${unroll * nv * lanes_bytes},%rdx",
              "dec %rcx", "jne 1b"]
    if frame_pointer:
        lines.append("pop %rbp")
    lines.append("ret")
    return lines


def snippet(name, body):
    return [f".globl {name}", f".type {name},@function", f"{name}:"] + body + [f".size {name},.-{name}"]


SELF_TESTS = {
    "clean avx512 loop": (FN_AVX512, lambda: kloop_asm("zmm", 12, 2, 4)),
    "clean avx2 loop": (FN_AVX2, lambda: kloop_asm("ymm", 6, 2, 4)),
    "avx512 loop with a masked B load": (FN_AVX512, lambda: kloop_asm("zmm", 12, 2, 4, masked=True)),
    "avx2 loop with a masked B load": (FN_AVX2, lambda: kloop_asm("ymm", 6, 2, 4, masked=True)),
    "avx512 loop with a spill": (FN_AVX512, lambda: kloop_asm(
        "zmm", 12, 2, 4, extra=["vmovups %zmm5,0x40(%rsp)", "vmovups 0x80(%rsp),%zmm5"])),
    "avx2 loop with a register copy": (FN_AVX2, lambda: kloop_asm(
        "ymm", 6, 2, 4, extra=["vmovaps %ymm3,%ymm13"])),
    "frame-pointer function, rbp spill": (FN_AVX512, lambda: kloop_asm(
        "zmm", 12, 2, 1, extra=["vmovups %zmm4,-0x80(%rbp)"], frame_pointer=True)),
    "no frame pointer, A pointer in rbp": (FN_AVX512, lambda: kloop_asm("zmm", 12, 2, 2, a_reg="%rbp")),
    "packing loop with a scatter and a gather": (FN_AVX512, lambda: [
        "mov $16,%rcx", "1:", "kxnorw %k0,%k0,%k1", "vmovups (%rsi),%ymm1",
        "vscatterqps %ymm1,(%rdi,%zmm2,1){%k1}", "kxnorw %k0,%k0,%k2",
        "vgatherdps (%rsi,%zmm3,4),%zmm4{%k2}", "add $32,%rsi", "dec %rcx", "jne 1b", "ret"]),
    "polynomial (elementwise) loop is not a k-loop": (FN_AVX512, lambda: [
        "mov $16,%rcx", "1:", "vmovups (%rsi),%zmm0"]
        + [line for i in range(8) for line in (f"vmovaps %zmm9,%zmm{i + 1}",
                                               f"vfmadd213ps %zmm10,%zmm0,%zmm{i + 1}")]
        + ["vmovups %zmm1,(%rdi)", "add $64,%rsi", "add $64,%rdi", "dec %rcx", "jne 1b", "ret"]),
    "FMA probe (no loads) is not a k-loop": (FN_AVX512, lambda: [
        "mov $64,%rcx", "1:"] + [f"vfmadd213ps %zmm30,%zmm31,%zmm{i}" for i in range(12)]
        + ["dec %rcx", "jne 1b", "ret"]),
    "SIMD intrinsic called out of line": (
        "_ZN8backprop6kernel10activation3map17h0123456789abcdefE",
        lambda: ["vmovups (%rsi),%zmm0", "call _ZN4core9core_arch3x867avx512f15_mm512_fmadd_ps17h0123456789abcdefE",
                 "ret"]),
    "reduction loop with 4 accumulators is not a k-loop": (FN_AVX512, lambda: kloop_asm("zmm", 2, 2, 2)),
    "backward jump into straight-line code is not a loop": (FN_AVX512, lambda: [
        "test %rcx,%rcx", "jne 3f", "jmp 4f", "2:"]
        + [f"vfmadd231ps %zmm30,%zmm31,%zmm{i}" for i in range(24)]
        + ["jmp 5f", "4:"] + [f"vpxord %zmm{i},%zmm{i},%zmm{i}" for i in range(24)]
        + ["jmp 2b", "3:", "nop", "5:", "ret"]),
    "latency-bound loop (one accumulator chain)": (FN_AVX512, lambda: [
        "mov $64,%rcx", "1:", "vmovups (%rdx),%zmm30"]
        + ["vfmadd231ps %zmm30,%zmm31,%zmm0"] * 16
        + ["add $64,%rdx", "dec %rcx", "jne 1b", "ret"]),
}


# A piece of real `objdump -d -C -l --inlines` output (paths shortened): the
# scatter in A packing inlined into the AVX-512 copy of the packed GEMM op.
INLINES_SAMPLE = """
backprop-0.cgu.15.rcgu.o:     file format elf64-x86-64


Disassembly of section .text._ZN8backprop6kernel6avx5128dispatch17hba1a4675ca986eb0E:

0000000000000000 <backprop::kernel::avx512::dispatch>:
backprop::kernel::avx512::dispatch:
/repo/src/kernel/avx512.rs:137
inlined by /repo/src/gemm/loops.rs:334 (run<backprop::kernel::avx512::Avx512, 12, 2>)
inlined by /repo/src/kernel/avx512.rs:141 (_ZN8backprop6kernel6avx5128dispatch17hba1a4675ca986eb0E)
   0:\tpush   %rbx
inlined by /repo/src/gemm/loops.rs:334 (run<backprop::kernel::avx512::Avx512, 12, 2>)
inlined by /repo/src/kernel/avx512.rs:141 (_ZN8backprop6kernel6avx5128dispatch17hba1a4675ca986eb0E)
   1:\tsub    $0x70,%rsp
pack_a_panel():
/repo/src/gemm/pack.rs:43
inlined by /repo/src/gemm/pack.rs:80 (pack_a)
inlined by /repo/src/gemm/loops.rs:334 (run<backprop::kernel::avx512::Avx512, 12, 2>)
inlined by /repo/src/kernel/avx512.rs:141 (_ZN8backprop6kernel6avx5128dispatch17hba1a4675ca986eb0E)
 e3a:\tvscatterqps %ymm1,(%r11,%zmm2,1){%k1}
 e40:\tret
"""


def self_test(objdump, mca):
    tmp = tempfile.mkdtemp(prefix="check_codegen_selftest_")
    asm = [".text"]
    names = {}
    for k, (case, (fn, body)) in enumerate(SELF_TESTS.items()):
        # One symbol per case, all demangling to the entry point's name.
        sym = fn.replace("17h0123456789abcdef", f"17h{k:02x}23456789abcdef")
        names[case] = k
        asm += snippet(sym, body())
    src = os.path.join(tmp, "cases.s")
    obj = os.path.join(tmp, "cases.o")
    with open(src, "w") as fh:
        fh.write("\n".join(asm) + "\n")
    r = subprocess.run(["as", "--64", "-o", obj, src], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"self-test: as failed:\n{r.stderr}")
    funcs = disassemble(obj, objdump)
    assert len(funcs) == len(SELF_TESTS), f"parsed {len(funcs)} functions"
    by_case = {case: funcs[k] for case, k in names.items()}
    failures = 0

    def expect(case, cond, what):
        nonlocal failures
        status = "ok  " if cond else "FAIL"
        if not cond:
            failures += 1
        print(f"  {status} {case}: {what}")

    def kloops(case):
        f = by_case[case]
        fp = uses_frame_pointer(f)
        return [(loop, analyse_loop(loop, fp)) for loop in innermost_loops(f)]

    for case in ("clean avx512 loop", "clean avx2 loop", "avx512 loop with a masked B load",
                 "avx2 loop with a masked B load"):
        ls = [x for x in kloops(case) if x[1]]
        w, mr, per = ("zmm", 12, 96) if "512" in case else ("ymm", 6, 48)
        ok = (len(ls) == 1 and ls[0][1]["fmas"] == per and ls[0][1]["k_steps"] == 4
              and ls[0][1]["mr"] == mr and ls[0][1]["nv"] == 2 and not ls[0][1]["violations"]
              and ls[0][1]["width"] == w)
        expect(case, ok, f"one {w} k-loop, {per} FMAs, 4 k steps, tile {mr}x2, no violations")
    for case, needle in (("avx512 loop with a spill", "stack access"),
                         ("avx2 loop with a register copy", "not an FMA"),
                         ("frame-pointer function, rbp spill", "stack access")):
        ls = [x for x in kloops(case) if x[1]]
        v = ls[0][1]["violations"] if ls else []
        expect(case, len(ls) == 1 and len(v) >= 1 and all(needle in why for _, why in v),
               f"k-loop found and flagged ({needle}): {[i.text for i, _ in v]}")
    ls = [x for x in kloops("no frame pointer, A pointer in rbp") if x[1]]
    expect("no frame pointer, A pointer in rbp", len(ls) == 1 and not ls[0][1]["violations"],
           "rbp as a general register is not a stack access")
    g = [(f, i) for f, i in find_gathers(funcs) if f is by_case["packing loop with a scatter and a gather"]]
    expect("packing loop with a scatter and a gather",
           sorted(i.mnem for _, i in g) == ["vgatherdps", "vscatterqps"] and len(find_gathers(funcs)) == 2,
           f"found {[i.mnem for _, i in g]} and nothing elsewhere")
    expect("polynomial (elementwise) loop is not a k-loop",
           len(innermost_loops(by_case["polynomial (elementwise) loop is not a k-loop"])) == 1
           and not [x for x in kloops("polynomial (elementwise) loop is not a k-loop") if x[1]],
           "one loop, not classified as a k-loop")
    outlined = find_outlined_intrinsics(funcs)
    expect("SIMD intrinsic called out of line",
           [(f is by_case["SIMD intrinsic called out of line"], n, names) for f, _, n, names in outlined]
           == [(True, 1, ["_mm512_fmadd_ps"])],
           f"calls found: {[(f.name, names) for f, _, _, names in outlined]}")
    expect("reduction loop with 4 accumulators is not a k-loop",
           len(innermost_loops(by_case["reduction loop with 4 accumulators is not a k-loop"])) == 1
           and not [x for x in kloops("reduction loop with 4 accumulators is not a k-loop") if x[1]],
           "one loop, fewer than 8 accumulators: not a register tile")
    probe = by_case["FMA probe (no loads) is not a k-loop"]
    expect("FMA probe (no loads) is not a k-loop",
           len(innermost_loops(probe)) == 1 and not [x for x in kloops("FMA probe (no loads) is not a k-loop") if x[1]],
           "one loop, not classified as a k-loop")
    expect("backward jump into straight-line code is not a loop",
           innermost_loops(by_case["backward jump into straight-line code is not a loop"]) == [],
           "no natural loop")
    sample = parse_objdump(INLINES_SAMPLE)
    hits = find_gathers(sample)
    ok = (len(sample) == 1 and len(hits) == 1
          and op_label(sample[0], {"src/gemm/loops.rs": [(10, "PackB"), (300, "Compute")]}) == "Compute"
          and where(hits[0][1]) == "src/gemm/pack.rs:43 (pack_a_panel) <- src/gemm/pack.rs:80 "
          "(pack_a) <- src/gemm/loops.rs:334 (run)")
    expect("objdump -l --inlines parsing", ok,
           f"scatter attributed to op Compute at {where(hits[0][1]) if hits else None}")
    lat = [x for x in kloops("latency-bound loop (one accumulator chain)") if x[1]]
    expect("latency-bound loop (one accumulator chain)", lat == [],
           "fewer than 8 accumulators: not a k-loop")
    if mca is not None:
        # The bound comparison: the clean loop sits on the bound, a serial FMA
        # chain far above it.
        loop, info = [x for x in kloops("clean avx512 loop") if x[1]][0]
        per_fma = mca.cycles_per_iteration("skylake-avx512", calibration_asm("zmm")) / 24
        pred = mca.cycles_per_iteration("skylake-avx512", loop_asm(loop)) / info["k_steps"]
        b = per_fma * info["fmas"] / info["k_steps"]
        expect("llvm-mca on the clean avx512 loop", pred <= 1.1 * b,
               f"skylake-avx512 {pred:.2f} cycles per k step, bound {b:.2f}")
        chain = innermost_loops(by_case["latency-bound loop (one accumulator chain)"])[0]
        pred = mca.cycles_per_iteration("skylake-avx512", loop_asm(chain))
        b = per_fma * 16
        expect("llvm-mca on the latency-bound loop", pred > 1.1 * b,
               f"skylake-avx512 {pred:.2f} cycles per iteration, bound {b:.2f}: over it")
    shutil.rmtree(tmp)
    print("self-test " + ("passed" if failures == 0 else f"FAILED ({failures})"))
    return failures == 0


# --------------------------------------------------------------------------- main

def find_tool(names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true", help="run the detectors on built-in snippets")
    ap.add_argument("--objdump-file", help="check this saved `objdump -d -r -C -l --inlines` output")
    ap.add_argument("--artifact", help="disassemble this file instead of building the rlib")
    ap.add_argument("--no-mca", action="store_true", help="skip the llvm-mca throughput table")
    ap.add_argument("--llvm-mca", default=None, help="llvm-mca executable (default: llvm-mca-19)")
    ap.add_argument("--objdump", default="objdump", help="GNU objdump executable")
    ap.add_argument("--cpu", action="append", default=None,
                    help="llvm-mca model to predict on (repeatable; default: "
                    + ", ".join(DEFAULT_CPUS) + "; the host's model is always added)")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="allowed excess of a prediction over the FMA bound (default 0.10)")
    args = ap.parse_args()
    if platform.machine() not in ("x86_64", "AMD64") and not args.objdump_file:
        print(f"check_codegen: nothing to check on {platform.machine()} (x86-64 kernels only)")
        return 0

    mca = None
    if not args.no_mca:
        exe = args.llvm_mca or find_tool(["llvm-mca-19"])
        if not exe:
            print("check_codegen: llvm-mca-19 not found (apt-get install -y llvm-19), "
                  "or pass --no-mca", file=sys.stderr)
            return 2
        mca = Mca(exe, tempfile.mkdtemp(prefix="check_codegen_mca_"))

    if args.self_test:
        ok = self_test(args.objdump, mca)
        if mca:
            shutil.rmtree(mca.workdir)
        return 0 if ok else 1

    if args.objdump_file:
        with open(args.objdump_file, encoding="utf-8", errors="replace") as fh:
            funcs = parse_objdump(fh)
        source = args.objdump_file
    else:
        source = args.artifact or build_rlib()
        funcs = disassemble(source, args.objdump)
    print(f"checking {source}")
    failures, _ = check(funcs, mca, args.tolerance, cpus=args.cpu or DEFAULT_CPUS,
                        require_ops=not args.objdump_file)
    if mca:
        shutil.rmtree(mca.workdir)
    if failures:
        print(f"\ncodegen check FAILED ({len(failures)}):")
        for f in failures:
            print("  - " + f)
        return 1
    print("\ncodegen check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
