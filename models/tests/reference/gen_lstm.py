"""Reference values for models/tests/lstm_reference.rs, produced by PyTorch's nn.LSTM.

Run from the repository root with PyTorch installed (`pip install torch numpy`):
    python3 models/tests/reference/gen_lstm.py > models/tests/reference/lstm.json

Weights are drawn in float32 (what the Rust side stores) and the maths runs in float64, so the
expected values carry no float32 rounding of their own. Weight names follow maintcast's layout:
`lstm.{l}.weight_ih|weight_hh|bias_ih|bias_hh` (PyTorch's `*_l0` of a one-layer nn.LSTM, or
`*_l{l}` of a multi-layer one) and `head.weight|bias` (nn.Linear). With `pooling="attention"`,
`attn.weight` (nn.Linear(H, 1, bias=False)) scores each step of the top layer, a softmax over time
weighs the steps, and the head reads the last step beside the weighted sum (nn.Linear(2H, 1)).
"""
import json

import torch

torch.manual_seed(20240611)


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def case(name, n_features, hidden, batch, steps, grads, stacked_module=False, pooling="last"):
    """`stacked_module`: build one multi-layer nn.LSTM (equal widths) instead of one per layer,
    to show that its `*_l{l}` weights map onto `lstm.{l}.*`."""
    if stacked_module:
        assert len(set(hidden)) == 1
        lstms = [torch.nn.LSTM(n_features, hidden[0], num_layers=len(hidden), batch_first=True)]
    else:
        sizes = [n_features] + hidden
        lstms = [torch.nn.LSTM(sizes[l], hidden[l], batch_first=True) for l in range(len(hidden))]
    attention = pooling == "attention"
    head = torch.nn.Linear(2 * hidden[-1] if attention else hidden[-1], 1)
    extra = [torch.nn.Linear(hidden[-1], 1, bias=False)] if attention else []
    modules = torch.nn.ModuleList(lstms + [head] + extra).to(torch.float64)
    # Wider than PyTorch's default init so gates leave the linear region and saturate sometimes.
    with torch.no_grad():
        for p in modules.parameters():
            p.copy_(f32(torch.empty_like(p).uniform_(-0.8, 0.8)))

    weights = {}
    for l in range(len(hidden)):
        module, suffix = (lstms[0], f"l{l}") if stacked_module else (lstms[l], "l0")
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            weights[f"lstm.{l}.{kind}"] = getattr(module, f"{kind}_{suffix}")
    if attention:
        weights["attn.weight"] = extra[0].weight
    weights["head.weight"] = head.weight
    weights["head.bias"] = head.bias

    x = f32(torch.randn(batch, steps, n_features, dtype=torch.float64))
    target = f32(torch.randn(batch, dtype=torch.float64))
    seq = x
    for m in lstms:
        seq, _ = m(seq)
    if attention:
        alpha = torch.softmax(extra[0](seq).squeeze(2), dim=1)
        pooled = (alpha.unsqueeze(2) * seq).sum(dim=1)
        y = head(torch.cat([seq[:, -1, :], pooled], dim=1)).squeeze(1)
    else:
        y = head(seq[:, -1, :]).squeeze(1)
    loss = ((y - target) ** 2).mean()
    loss.backward()

    def flat(t):
        return [float(v) for v in t.detach().reshape(-1)]

    return {
        "name": name,
        "pooling": pooling,
        "n_features": n_features,
        "hidden": hidden,
        "batch": batch,
        "steps": steps,
        "weights": {k: {"shape": list(v.shape), "data": flat(v)} for k, v in weights.items()},
        "x": flat(x),
        "target": flat(target),
        "y": flat(y),
        "loss": float(loss.detach()),
        # d(mean squared error)/d(weight), for the weights listed.
        "grads": {k: flat(weights[k].grad) for k in grads},
    }


cases = [
    case("two_layers_5_4", 3, [5, 4], batch=2, steps=4,
         grads=["lstm.0.weight_ih", "lstm.0.weight_hh", "lstm.0.bias_hh", "lstm.1.weight_hh",
                "lstm.1.bias_ih", "head.weight", "head.bias"]),
    case("torch_stacked_4_4", 2, [4, 4], batch=3, steps=6, grads=["lstm.1.weight_ih"],
         stacked_module=True),
    case("one_layer_one_step", 4, [3], batch=1, steps=1, grads=["lstm.0.weight_ih"]),
    case("attention_two_layers_6_5", 3, [6, 5], batch=3, steps=7, pooling="attention",
         grads=["attn.weight", "head.weight", "head.bias", "lstm.1.weight_hh", "lstm.1.bias_ih",
                "lstm.0.weight_ih"]),
]
print(json.dumps({"generator": f"models/tests/reference/gen_lstm.py, torch {torch.__version__}",
                  "cases": cases}, indent=1))
