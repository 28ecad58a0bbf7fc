// Context-parallel attention (see attention.h): each of this rank's two chunks against the keys up to its end.
#include "core/error.h"
#include "gpu/check.h"
#include "model/sequence_layout.h"
#include "ops/cuda/elementwise.h"
#include "train/cuda_engine/attention.h"
#ifdef QWEN3_HAVE_CUDNN
#include "gpu/cudnn_attention.h"

namespace qwen3::cuda {

SdpaShape Attention::chunk_shape(int j, std::int64_t B, std::int64_t S) const {
  // This rank holds chunks r and 2·cp − 1 − r of every sequence; its local chunk j attends to every key up to that
  // chunk's end: q, o and lse at row j·c of this rank's buffers, k|v in the gathered kv_full_.
  const int cp = cp_size_, r = cp_rank_;
  const std::int64_t c = S / (2 * cp), g = j == 0 ? r : 2 * cp - 1 - r, kv2 = 2 * tp_.kv_dim;
  SdpaShape shape{B, c, tp_.heads, tp_.kv_heads, cfg_.head_dim, tp_.q_dim, kv2, kv2, tp_.q_dim};
  shape.kv_seq = (g + 1) * c;  // keys up to the end of chunk g
  shape.q_batch_rows = 2 * c;  // this rank's rows of each sequence
  shape.kv_batch_rows = S;     // the whole gathered sequence
  shape.lse_rows = lse_rows(S, cp);  // chunk j's statistics at j · lse_rows / 2, each 16-byte aligned
  return shape;
}

void Attention::reorder(const bf16* from, bf16* to, std::int64_t B, std::int64_t S, bool to_sequence_order) {
  // Rank q's block is [B, S / cp, 2·kv] at q·B·S / cp rows; its local chunk j is sequence chunk g (rows g·c …).
  const int cp = cp_size_;
  const std::int64_t c = S / (2 * cp), w = 2 * tp_.kv_dim;
  const std::size_t bytes = static_cast<std::size_t>(c * w) * sizeof(bf16);
  const std::size_t rank_pitch = static_cast<std::size_t>(2 * c * w) * sizeof(bf16), seq_pitch = static_cast<std::size_t>(S * w) * sizeof(bf16);
  for (int q = 0; q < cp; ++q)
    for (int j = 0; j < 2; ++j) {
      const std::int64_t g = j == 0 ? q : 2 * cp - 1 - q;
      const std::int64_t rank_row = q * B * 2 * c + j * c, seq_row = g * c;
      const bf16* src = from + (to_sequence_order ? rank_row : seq_row) * w;
      bf16* dst = to + (to_sequence_order ? seq_row : rank_row) * w;
      CUDA_CHECK(cudaMemcpy2DAsync(dst, to_sequence_order ? seq_pitch : rank_pitch, src,
                                   to_sequence_order ? rank_pitch : seq_pitch, bytes, static_cast<std::size_t>(B),
                                   cudaMemcpyDeviceToDevice, ctx_->stream));
    }
}

void Attention::gather_kv(const LayerActs& a, const MicroDims& d) {
  // Every rank's keys|values of one layer (k from a.k, v from a.qkv), all-gathered into kv_full_ in sequence order.
  copy_columns(a.k, d.kvd, kv_local_, 2 * d.kvd, d.T, d.kvd, ctx_->stream);
  copy_columns(a.qkv + d.qd + d.kvd, d.qkv_dim, kv_local_ + d.kvd, 2 * d.kvd, d.T, d.kvd, ctx_->stream);
  cp_->all_gather_bf16(kv_local_, kv_ranks_, static_cast<std::size_t>(d.T * 2 * d.kvd));
  reorder(kv_ranks_, kv_full_, d.B, d.S_full, true);
  ctx_->mark("key/value all-gather (context parallel)");
}

void Attention::cp_forward(LayerActs& a, const MicroDims& d) {
  gather_kv(a, d);
  for (int j = 0; j < 2; ++j) {
    const SdpaShape shape = chunk_shape(j, d.B, d.S_full);
    if (static_cast<std::int64_t>(cudnn_->workspace_bytes(shape)) > workspace_bytes_)
      throw InternalError("cuDNN attention workspace too small");
    const std::int64_t row = j * shape.seq;
    cudnn_->forward(a.q + row * d.qd, kv_full_, kv_full_ + d.kvd, a.attn + row * d.qd, a.lse + j * shape.lse_rows / 2,
                    shape, workspace_, ctx_->stream);
  }
  ctx_->mark("attention fwd (two context-parallel chunks)");
}

void Attention::cp_backward(LayerActs& a, const MicroDims& d) {
  // The keys and values again (a whole sequence per layer is not kept), each chunk's backward, the two chunks' key and
  // value gradients added in sequence order (chunk 1 reaches further), then reduce-scattered to their owners.
  const cudaStream_t st = ctx_->stream;
  const Scratch& s = scratch_;
  gather_kv(a, d);
  const std::int64_t S = d.S_full, w = 2 * d.kvd;
  const SdpaShape first = chunk_shape(0, d.B, S), second = chunk_shape(1, d.B, S);
  const std::int64_t c = first.seq;
  const std::size_t pitch = static_cast<std::size_t>(S * w) * sizeof(bf16);
  if (second.kv_seq < S)  // keys past chunk 1 get nothing from this rank
    CUDA_CHECK(cudaMemset2DAsync(dkv_ + second.kv_seq * w, pitch, 0, static_cast<std::size_t>((S - second.kv_seq) * w) * sizeof(bf16),
                                 static_cast<std::size_t>(d.B), st));
  cudnn_->backward(a.q + c * d.qd, kv_full_, kv_full_ + d.kvd, a.attn + c * d.qd, s.dattn + c * d.qd,
                   a.lse + second.lse_rows / 2, s.dq + c * d.qd, dkv_, dkv_ + d.kvd, second, workspace_, st);
  cudnn_->backward(a.q, kv_full_, kv_full_ + d.kvd, a.attn, s.dattn, a.lse, s.dq, dkv_first_, dkv_first_ + d.kvd, first,
                   workspace_, st);
  for (std::int64_t b = 0; b < d.B; ++b) add(dkv_ + b * S * w, dkv_first_ + b * S * w, dkv_ + b * S * w, first.kv_seq * w, st);
  ctx_->mark("attention bwd (two context-parallel chunks)");
  reorder(dkv_, kv_ranks_, d.B, S, false);
  cp_->reduce_scatter_sum_bf16(kv_ranks_, kv_local_, static_cast<std::size_t>(d.T * w));
  copy_columns(kv_local_, w, s.dk, d.kvd, d.T, d.kvd, st);
  copy_columns(kv_local_ + d.kvd, w, s.dqkv + d.qd + d.kvd, d.qkv_dim, d.T, d.kvd, st);
  ctx_->mark("key/value gradient reduce-scatter (context parallel)");
}

}  // namespace qwen3::cuda
#endif  // QWEN3_HAVE_CUDNN (context parallelism runs on cuDNN only: the constructor refuses it otherwise)
