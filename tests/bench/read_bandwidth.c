/* Memory read bandwidth of this machine: N threads (OMP_NUM_THREADS) sum a 512 MiB f32 array
 * with AVX2 loads, five passes, best pass printed. The roof for decoding at f32: every
 * generated token reads every weight once, so tokens/s <= bandwidth / weight bytes.
 *   gcc -O2 -mavx2 -fopenmp tests/bench/read_bandwidth.c -o /tmp/read_bandwidth
 *   OMP_NUM_THREADS=2 /tmp/read_bandwidth */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const size_t bytes = (size_t)512 << 20, n = bytes / sizeof(float);
    float *a = aligned_alloc(64, bytes);
    if (!a) return 1;
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double best = 0, check = 0;
    for (int pass = 0; pass < 5; pass++) {
        double t = omp_get_wtime();
        float total = 0;
#pragma omp parallel reduction(+ : total)
        {
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
#pragma omp for
            for (size_t i = 0; i < n; i += 32) {
                s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
                s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
                s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
                s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
            }
            float lanes[8];
            _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
            for (int k = 0; k < 8; k++) total += lanes[k];
        }
        t = omp_get_wtime() - t;
        if (bytes / t > best) best = bytes / t;
        check += total;
    }
    printf("%d threads: %.1f GB/s read (checksum %g)\n", omp_get_max_threads(), best / 1e9, check);
    free(a);
    return 0;
}
