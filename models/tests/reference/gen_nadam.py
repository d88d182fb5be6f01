"""Reference trajectories for the optimizers in models/src/optim.rs, computed independently in NumPy
(float64) from the update rules as Keras 3 / tf.keras define them (keras/src/optimizers/*.py):

- Nadam: Dozat's Nesterov Adam with Keras's momentum schedule
  u_t = beta_1 * (1 - 0.5 * 0.96 ** (0.004 * t)), a running product of the u_t, epsilon outside sqrt.
- Adam: bias correction folded into the step size, epsilon outside sqrt.
- RMSprop: rho, epsilon inside the square root, optional momentum on the increment.
- SGD: v = momentum * v - lr * g; w += v.
- use_ema (keras/src/optimizers/base_optimizer.py, _update_model_variables_moving_average): after
  each update, average = w on the first step, else momentum * average + (1 - momentum) * w.

Gradients come from a fixed, non-convex function of the parameters so the trajectory depends on
every step: loss(w) = sum(w**4 / 4 - w) + w0*w1, grad = w**3 - 1 + (w1, w0, 0, ...).
Run: python3 gen_nadam.py > optimizers.json
"""
import json
import numpy as np

W0 = np.array([0.5, -1.5, 2.0, 0.0], dtype=np.float64)
STEPS = 12
LR = 0.05


def grad(w):
    g = w ** 3 - 1.0
    g[0] += w[1]
    g[1] += w[0]
    return g


def nadam(beta_1=0.9, beta_2=0.999, eps=1e-7):
    w, m, v, u_prod = W0.copy(), np.zeros(4), np.zeros(4), 1.0
    out = []
    for it in range(STEPS):
        g = grad(w)
        t, t1 = it + 1, it + 2
        u_t = beta_1 * (1.0 - 0.5 * 0.96 ** (0.004 * t))
        u_t1 = beta_1 * (1.0 - 0.5 * 0.96 ** (0.004 * t1))
        u_prod_t = u_prod * u_t
        u_prod_t1 = u_prod_t * u_t1
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        m_hat = u_t1 * m / (1 - u_prod_t1) + (1 - u_t) * g / (1 - u_prod_t)
        v_hat = v / (1 - beta_2 ** t)
        w = w - LR * m_hat / (np.sqrt(v_hat) + eps)
        u_prod = u_prod_t
        out.append(w.tolist())
    return out


def ema(trajectory, momentum):
    out, avg = [], None
    for w in trajectory:
        w = np.array(w)
        avg = w.copy() if avg is None else momentum * avg + (1 - momentum) * w
        out.append(avg.tolist())
    return out


def adam(beta_1=0.9, beta_2=0.999, eps=1e-7):
    w, m, v = W0.copy(), np.zeros(4), np.zeros(4)
    out = []
    for it in range(STEPS):
        g = grad(w)
        t = it + 1
        alpha = LR * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        w = w - alpha * m / (np.sqrt(v) + eps)
        out.append(w.tolist())
    return out


def rmsprop(rho=0.9, momentum=0.0, eps=1e-7):
    w, vel, mom = W0.copy(), np.zeros(4), np.zeros(4)
    out = []
    for _ in range(STEPS):
        g = grad(w)
        vel = rho * vel + (1 - rho) * g * g
        inc = LR * g / np.sqrt(vel + eps)
        if momentum > 0:
            mom = momentum * mom + inc
            w = w - mom
        else:
            w = w - inc
        out.append(w.tolist())
    return out


def sgd(momentum=0.9):
    w, v = W0.copy(), np.zeros(4)
    out = []
    for _ in range(STEPS):
        g = grad(w)
        v = momentum * v - LR * g
        w = w + v
        out.append(w.tolist())
    return out


print(json.dumps({
    "w0": W0.tolist(), "lr": LR, "steps": STEPS,
    "nadam": nadam(), "adam": adam(), "rmsprop": rmsprop(), "rmsprop_momentum": rmsprop(momentum=0.5),
    "sgd_momentum": sgd(), "nadam_ema_0_9": ema(nadam(), 0.9),
}, indent=1))
