// Single-core f32 FMA peak of this CPU: twelve independent AVX2 FMA chains (issue 6, BENCHMARKS.md).
//   gcc -O2 -mavx2 -mfma scripts/fma-peak.c -o /tmp/fma-peak && /tmp/fma-peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(){
  __m256 a[12]; __m256 b=_mm256_set1_ps(1.0001f), c=_mm256_set1_ps(0.9999f);
  for(int i=0;i<12;i++) a[i]=_mm256_set1_ps(i);
  struct timespec s,e; clock_gettime(CLOCK_MONOTONIC,&s);
  long N=200000000;
  for(long n=0;n<N;n++){
    #pragma GCC unroll 12
    for(int i=0;i<12;i++) a[i]=_mm256_fmadd_ps(a[i],b,c);
  }
  clock_gettime(CLOCK_MONOTONIC,&e);
  double t=(e.tv_sec-s.tv_sec)+(e.tv_nsec-s.tv_nsec)*1e-9;
  float sum=0; for(int i=0;i<12;i++){float v[8];_mm256_storeu_ps(v,a[i]);sum+=v[0];}
  printf("%.1f GFLOP/s one core (checksum %g)\n", N*12.0*16/t/1e9, sum);
}
