/* noperf: run a program with perf_event_open refused.
 *
 *     noperf PROGRAM ARGS...
 *
 * Tests run refhunt's target under it to see what happens when hardware breakpoints are
 * refused, as in a container whose seccomp profile denies perf_event_open (Docker's default
 * profile does, without CAP_PERFMON or CAP_SYS_ADMIN). It installs a seccomp filter that makes
 * perf_event_open fail with EACCES and allows every other system call, then executes PROGRAM.
 * The filter is kept across execve and inherited by every child.
 *
 * Only x86_64 system calls (including x32 ones) are filtered; those of other architectures
 * (i386 through int 0x80) are allowed untouched. On any failure noperf prints one line to
 * stderr and exits with 127.
 *
 * Build: gcc -O2 -Wall tests/noperf.c -o noperf
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* perf_event_open's number in the x86_64 table, whatever this file is compiled for. */
#define X86_64_NR_PERF_EVENT_OPEN 298
/* x32 system calls are x86_64 ones with this bit set in the number. */
#define X32_SYSCALL_BIT 0x40000000

#if defined(__x86_64__) && !defined(__ILP32__)
_Static_assert(__NR_perf_event_open == X86_64_NR_PERF_EVENT_OPEN, "perf_event_open is 298 on x86_64");
#endif

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: noperf PROGRAM ARGS... (runs PROGRAM with perf_event_open refused)\n");
        return 127;
    }
    struct sock_filter filter[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 4), /* else: 6 */
        /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, X86_64_NR_PERF_EVENT_OPEN, 1, 0), /* then: 5 */
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, X32_SYSCALL_BIT | X86_64_NR_PERF_EVENT_OPEN, 0, 1),
        /* 5 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA)),
        /* 6 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof filter / sizeof filter[0]),
        .filter = filter,
    };
    /* Needed to install a filter without CAP_SYS_ADMIN; also kept across execve. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "noperf: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return 127;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
        fprintf(stderr, "noperf: prctl(PR_SET_SECCOMP): %s\n", strerror(errno));
        return 127;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "noperf: cannot execute %s: %s\n", argv[1], strerror(errno));
    return 127;
}
