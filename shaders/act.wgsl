// Activation functions shared by the gated-FFN kernels (activation.wgsl, moe.wgsl).

fn silu(v: f32) -> f32 {
  return v / (1.0 + exp(-v));
}

// GELU with the tanh approximation (HF "gelu_pytorch_tanh"; Gemma's GeGLU).
fn gelu_tanh(v: f32) -> f32 {
  // tanh saturates to +-1 in f32 beyond |u| = 9; clamping keeps exp-based tanh finite.
  let u = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -9.0, 9.0);
  return 0.5 * v * (1.0 + tanh(u));
}
