/*
 * avx2-only.so: run a program on an AVX-512 host as if the CPU had AVX2 + FMA and nothing
 * wider, so that both sides of a benchmark (the harness and ONNX Runtime's MLAS) choose their
 * AVX2 kernels, and the AVX2 half of issue 16 can be measured on a host that has more.
 *
 * How: Linux's CPUID faulting (`arch_prctl(ARCH_SET_CPUID, 0)`, the `cpuid_fault` flag in
 * /proc/cpuinfo; KVM offers it to guests) turns every `cpuid` instruction of the process into
 * a SIGSEGV. The handler below runs the real `cpuid` (faulting switched off for that one
 * instruction), clears the AVX-512, AVX-VNNI and wider bits, writes the registers back and
 * steps over the instruction. The setting is per thread, inherited by threads made after it
 * and reset by execve, so the constructor runs it in every process that preloads this file.
 * Library code that already read `cpuid` before the constructor (glibc's own string
 * functions, chosen in ld.so) is not affected: `scripts/avx2-only.sh` sets GLIBC_TUNABLES for
 * those. `xgetbv` cannot be trapped, but every dispatcher checks `cpuid`'s feature bit before
 * it looks at the OS's AVX-512 state.
 *
 * Programs install SIGSEGV handlers of their own (Rust's stack-overflow guard, rustc's and
 * LLVM's crash reporters): `sigaction` and `signal` are wrapped so that such a handler is
 * kept aside and called for every fault that is not a `cpuid`, while this one stays installed
 * (without that, rustc died at its first `cpuid` under `avx2-only.sh cargo test`).
 *
 * Build (the wrapper does it): cc -O2 -shared -fPIC -o target/avx2-only.so scripts/avx2-only.c
 * Use: scripts/avx2-only.sh COMMAND [ARGS...]
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

/* The SIGSEGV handler the program believes it has installed. */
static struct sigaction chained;
static int installed;
/* AVX2_ONLY_KEEP_AVX_VNNI=1 (`avx2-only.sh --avx-vnni`): AVX-VNNI stays, as on Intel's client
 * cores since Alder Lake, which have it and no AVX-512. */
static int keep_avx_vnni;

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    static sigaction_fn next;
    if (!next) next = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return next(sig, act, old);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || !installed) return real_sigaction(sig, act, old);
    struct sigaction was = chained;
    if (act) chained = *act;
    if (old) *old = was;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

/* Clears what an AVX2 + FMA host (Haswell, Zen 1-3) does not have. */
static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
        r[1] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* ECX: AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        r[2] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* EDX: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AVX512_FP16 */
        r[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(23));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX-VNNI, AVX512_BF16, AVX-IFMA */
        r[0] &= ~((keep_avx_vnni ? 0 : BIT(4)) | BIT(5) | BIT(23));
        /* EDX: AVX-VNNI-INT8, AVX-NE-CONVERT, AVX-VNNI-INT16, AVX10 */
        r[3] &= ~(BIT(4) | BIT(5) | BIT(10) | BIT(19));
    } else if (leaf == 0xd && sub == 0) {
        /* XCR0 bits the processor supports: no opmask, ZMM_Hi256, Hi16_ZMM state */
        r[0] &= ~(BIT(5) | BIT(6) | BIT(7));
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
        real_cpuid(leaf, sub, r);
        mask(leaf, sub, r);
        /* A 32-bit result clears the register's upper half, as cpuid does. */
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    /* Not a cpuid: the program's own handler takes it; with none, the default action runs
     * when the instruction faults again on return. */
    struct sigaction h = chained;
    if (h.sa_flags & SA_RESETHAND) chained.sa_handler = SIG_DFL, chained.sa_flags = 0;
    if (h.sa_flags & SA_SIGINFO) {
        h.sa_sigaction(sig, info, context);
    } else if (h.sa_handler != SIG_DFL && h.sa_handler != SIG_IGN) {
        h.sa_handler(sig);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
    }
}

__attribute__((constructor)) static void avx2_only(void) {
    const char *keep = getenv("AVX2_ONLY_KEEP_AVX_VNNI");
    keep_avx_vnni = keep && strcmp(keep, "1") == 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    /* SA_ONSTACK: a stack overflow must reach the program's handler on its signal stack. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (real_sigaction(SIGSEGV, &sa, &chained) != 0 ||
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr,
                "avx2-only.so: this kernel or CPU has no CPUID faulting (no `cpuid_fault` in "
                "/proc/cpuinfo); cannot hide AVX-512\n");
        exit(2);
    }
    installed = 1;
}
