// vqaudio::formant_postfilter: the adaptive short-term post-filter of CELP decoders (ITU-T G.729 section 4.2, without
// its pitch filter) on decoded speech (CPU, float32 in and out, double inside).
//
// Contract (the pure-PyTorch reference is vqaudio/ops/postfilter.py; x [B, T] float32, the first `context` samples of
// each row are history, T - context a multiple of L = subframe, p = order, W = 3 L, M = 64 warm-up samples,
// x[n] = 0 for n < 0 and context >= max(W, L + M + p), vqaudio.ops.postfilter.history(L, p)). For each subframe
// [a, a + L), a = context, context + L, ..., and for the one before it (a - L, for its gain only):
//   LPC     w = Hamming(W) * x[a + L - W : a + L]; r[k] = sum_i w[i] w[i - k] * exp(-(2 pi 60 k / sample_rate)^2 / 2)
//           for k = 0..p, r[0] = 1.0001 r[0] + 1e-9; a_0..a_p = Levinson-Durbin(r), a_0 = 1
//   filter  e[n] = sum_k a_k gamma_num^k x[n - k];  s[n] = e[n] - sum_{k>=1} a_k gamma_den^k s[n - k]
//           for n in [a - M, a + L), s = 0 before a - M                        // A(z/gamma_num) / A(z/gamma_den)
//   tilt    h = the first 24 samples of that filter's impulse response; k1 = sum h[i] h[i + 1] / sum h[i]^2;
//           t[n] = s[n] - tilt * max(k1, 0) * s[n - 1]
//   gain    g = sqrt(sum x[n]^2 / sum t[n]^2) over the subframe (1 where sum t^2 <= 1e-20);
//           y[n] = t[n] * (g' + (g - g') (1 - 0.9^(n - a + 1))), g' the previous subframe's g
// Each subframe reads only x[a - L - max(W - L, M + p) : a + L], so a signal filtered in pieces, each piece with the
// history before it, is filtered exactly as in one piece (vqaudio.postfilter.Postfilter streams it that way).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace vqaudio {
namespace {

constexpr int64_t kWarm = 64;     // M: samples of warm-up before each subframe for the recursive filter
constexpr int64_t kImpulse = 24;  // samples of impulse response for the tilt estimate
constexpr double kLagHz = 60.0;   // Gaussian lag window bandwidth

int64_t history_needed(int64_t L, int64_t p) { return std::max(3 * L, L + kWarm + p); }

// Scratch space of one thread, sized once per call.
struct Scratch {
  Scratch(int64_t L, int64_t p)
      : span(history_needed(L, p)), xb(span), seg(3 * L), s(kWarm + L), r(p + 1), lpc(p + 1), prev(p + 1),
        an(p + 1), ad(p + 1) {}
  int64_t span;  // x[a + L - span : a + L] is all a subframe reads
  std::vector<double> xb, seg, s, r, lpc, prev, an, ad;
};

// Filters subframe [a, a + L) of row x (x[n] = 0 for n < 0); writes L samples of t (before the gain) to t_out and
// returns its gain g. `ham` is the Hamming window of W = 3 L samples, `lag` the p + 1 lag-window factors.
double filter_subframe(const float* x, int64_t a, int64_t L, int64_t p, double gn, double gd, double tilt,
                       const std::vector<double>& ham, const std::vector<double>& lag, Scratch& sc, double* t_out) {
  const int64_t W = 3 * L, span = sc.span, first = a + L - span;
  double* xb = sc.xb.data();  // xb[i] = x[first + i]
  for (int64_t i = 0; i < span; ++i) xb[i] = first + i < 0 ? 0.0 : static_cast<double>(x[first + i]);
  double* seg = sc.seg.data();  // the windowed LPC analysis span
  for (int64_t i = 0; i < W; ++i) seg[i] = xb[span - W + i] * ham[i];
  double* r = sc.r.data();  // every lag's sum in order of i, the lags side by side (independent chains)
  std::fill(r, r + p + 1, 0.0);
  for (int64_t i = 0; i < W; ++i) {
    const int64_t kmax = std::min(i, p);
    for (int64_t k = 0; k <= kmax; ++k) r[k] += seg[i] * seg[i - k];
  }
  for (int64_t k = 0; k <= p; ++k) r[k] *= lag[k];
  r[0] = r[0] * 1.0001 + 1e-9;
  std::vector<double>& lpc = sc.lpc;
  std::vector<double>& prev = sc.prev;
  std::fill(lpc.begin(), lpc.end(), 0.0);
  lpc[0] = 1.0;
  double err = r[0];
  for (int64_t i = 1; i <= p; ++i) {  // Levinson-Durbin
    double acc = r[i];
    for (int64_t j = 1; j < i; ++j) acc += lpc[j] * r[i - j];
    const double k = -acc / std::max(err, 1e-12);
    std::copy(lpc.begin(), lpc.begin() + i, prev.begin());
    for (int64_t j = 1; j < i; ++j) lpc[j] = prev[j] + k * prev[i - j];
    lpc[i] = k;
    err *= std::max(1.0 - k * k, 1e-6);
  }
  double* an = sc.an.data();
  double* ad = sc.ad.data();
  double pn = 1.0, pd = 1.0;
  for (int64_t k = 0; k <= p; ++k) {
    an[k] = lpc[k] * pn;
    ad[k] = lpc[k] * pd;
    pn *= gn;
    pd *= gd;
  }
  double* s = sc.s.data();  // s[i]: n = a - M + i
  const double* xs = xb + (span - L - kWarm);  // xs[i] = x[a - M + i]; xs[i - k] stays inside xb (span >= L + M + p)
  for (int64_t i = 0; i < kWarm + L; ++i) {
    double v = 0.0;
    for (int64_t k = 0; k <= p; ++k) v += an[k] * xs[i - k];
    for (int64_t k = 1; k <= p && k <= i; ++k) v -= ad[k] * s[i - k];
    s[i] = v;
  }
  double h[kImpulse];
  for (int64_t i = 0; i < kImpulse; ++i) {
    double v = i <= p ? an[i] : 0.0;
    for (int64_t k = 1; k <= p && k <= i; ++k) v -= ad[k] * h[i - k];
    h[i] = v;
  }
  double h01 = 0.0, h00 = 0.0;
  for (int64_t i = 0; i < kImpulse; ++i) {
    h00 += h[i] * h[i];
    if (i + 1 < kImpulse) h01 += h[i] * h[i + 1];
  }
  const double mu = tilt * std::max(h01 / std::max(h00, 1e-12), 0.0);
  double ex = 0.0, et = 0.0;
  const double* xa = xb + (span - L);  // x[a + i]
  for (int64_t i = 0; i < L; ++i) {
    const double v = s[kWarm + i] - mu * s[kWarm + i - 1];
    t_out[i] = v;
    et += v * v;
    ex += xa[i] * xa[i];
  }
  return et > 1e-20 ? std::sqrt(ex / et) : 1.0;
}

at::Tensor formant_postfilter_cpu(const at::Tensor& x_, int64_t context, int64_t subframe, int64_t order,
                                  double gamma_num, double gamma_den, double tilt, int64_t sample_rate) {
  TORCH_CHECK_VALUE(x_.dim() == 2 && x_.scalar_type() == at::kFloat && x_.device().is_cpu(),
                    "formant_postfilter: x must be a 2-D float32 CPU tensor, got ", x_.scalar_type(), " ", x_.sizes());
  TORCH_CHECK_VALUE(subframe > 0 && order > 0 && order < kImpulse && sample_rate > 0,
                    "formant_postfilter: subframe and sample_rate must be positive and order in [1, ", kImpulse - 1,
                    "], got ", subframe, ", ", sample_rate, ", ", order);
  TORCH_CHECK_VALUE(context >= history_needed(subframe, order) && context <= x_.size(1),
                    "formant_postfilter: context must be in [", history_needed(subframe, order), ", T], got ", context);
  TORCH_CHECK_VALUE((x_.size(1) - context) % subframe == 0,
                    "formant_postfilter: T - context must be a multiple of subframe (", subframe, "), got ",
                    x_.size(1) - context);
  const at::Tensor x = x_.contiguous();
  const int64_t B = x.size(0), T = x.size(1), L = subframe, p = order, W = 3 * L, S = (T - context) / L;
  at::Tensor out = at::empty({B, T - context}, x.options());
  std::vector<double> ham(W), lag(p + 1);
  for (int64_t i = 0; i < W; ++i) ham[i] = 0.54 - 0.46 * std::cos(2.0 * M_PI * i / (W - 1));
  for (int64_t k = 0; k <= p; ++k) {
    const double f = 2.0 * M_PI * kLagHz * k / sample_rate;
    lag[k] = std::exp(-0.5 * f * f);
  }
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Scratch sc(L, p);
    std::vector<double> t(L);
    for (int64_t b = b0; b < b1; ++b) {
      const float* row = xp + b * T;
      double g_prev = filter_subframe(row, context - L, L, p, gamma_num, gamma_den, tilt, ham, lag, sc, t.data());
      for (int64_t s = 0; s < S; ++s) {
        const int64_t a = context + s * L;
        const double g = filter_subframe(row, a, L, p, gamma_num, gamma_den, tilt, ham, lag, sc, t.data());
        float* y = op + b * (T - context) + s * L;
        double decay = 0.9;
        for (int64_t i = 0; i < L; ++i) {
          y[i] = static_cast<float>(t[i] * (g_prev + (g - g_prev) * (1.0 - decay)));
          decay *= 0.9;
        }
        g_prev = g;
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vqaudio, m) {
  m.def("formant_postfilter(Tensor x, int context, int subframe, int order, float gamma_num, float gamma_den, "
        "float tilt, int sample_rate) -> Tensor");
}

TORCH_LIBRARY_IMPL(vqaudio, CPU, m) { m.impl("formant_postfilter", &formant_postfilter_cpu); }

}  // namespace vqaudio
