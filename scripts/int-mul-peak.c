// Issue rates of the AVX2 integer multiply-add instructions against FMA on one core: twelve
// independent chains each (issue 6, BENCHMARKS.md "Integer GEMM"). Prints instructions/s.
//   gcc -O2 -mavx2 -mfma scripts/int-mul-peak.c -o /tmp/int-mul-peak && /tmp/int-mul-peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define N 100000000L
#define LOOP(body) { double t=now(); for(long n=0;n<N;n++){ _Pragma("GCC unroll 12") for(int i=0;i<12;i++){ body; } } r=now()-t; }
int main(){
  __m256i a[12],b=_mm256_set1_epi8(3),o=_mm256_set1_epi16(1);
  __m256 f[12],g=_mm256_set1_ps(1.0001f),h=_mm256_set1_ps(0.9999f);
  for(int i=0;i<12;i++){a[i]=_mm256_set1_epi8(i);f[i]=_mm256_set1_ps(i);}
  double r;
  LOOP(a[i]=_mm256_maddubs_epi16(a[i],b)); printf("maddubs %.2f G/s\n",N*12/r/1e9);
  LOOP(a[i]=_mm256_madd_epi16(a[i],o)); printf("madd %.2f G/s\n",N*12/r/1e9);
  LOOP(if(i&1)a[i]=_mm256_madd_epi16(a[i],o);else a[i]=_mm256_maddubs_epi16(a[i],b)); printf("alt maddubs/madd %.2f G/s\n",N*12/r/1e9);
  LOOP(f[i]=_mm256_fmadd_ps(f[i],g,h)); printf("fma %.2f G/s\n",N*12/r/1e9);
  LOOP(a[i]=_mm256_sign_epi8(a[i],b)); printf("sign %.2f G/s\n",N*12/r/1e9);
  LOOP(if(i&1)f[i]=_mm256_fmadd_ps(f[i],g,h);else a[i]=_mm256_maddubs_epi16(a[i],b)); printf("alt fma/maddubs %.2f G/s\n",N*12/r/1e9);
  int s=0; for(int j=0;j<12;j++) s+=_mm256_extract_epi32(a[j],0)+(int)_mm256_cvtss_f32(f[j]);
  printf("(%d)\n",s);
}
