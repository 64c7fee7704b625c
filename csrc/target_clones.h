// VQ_TARGET_CLONES: multi-versioned functions (AVX-512 / AVX2+FMA / baseline, chosen once at load by the dynamic
// linker). The x86-64-v3 level is selected by CPU features (any AVX2+FMA CPU), where "arch=haswell" would match
// that model only. Other compilers and architectures get one plain version.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VQ_TARGET_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define VQ_TARGET_CLONES
#endif
