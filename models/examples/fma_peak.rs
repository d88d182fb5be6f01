//! The machine's f32 multiply-add ceiling, for reading `infer_bench`'s figures against it: each
//! thread runs 12 independent chains of AVX-512 FMAs (enough to hide their latency) and prints
//! FMA instructions per second, one line per thread and their sum. The default LSTM shape needs
//! 206 × 256 multiply-adds per window-step (16 per instruction), 60 steps per window.
//!
//! cargo run --release -p maintcast-models --example fma_peak -- [THREADS] [SECONDS]

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(2, |a| a.parse().expect("THREADS"));
    let seconds: f64 = args.next().map_or(2.0, |a| a.parse().expect("SECONDS"));
    if !is_x86_feature_detected!("avx512f") {
        eprintln!("this CPU has no AVX-512");
        return;
    }
    let rates: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || chains(seconds)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in rates.iter().enumerate() {
        println!("thread {i}: {:.2} G FMA instructions/s", r / 1e9);
    }
    let total: f64 = rates.iter().sum();
    let per_window = 206.0 * 256.0 / 16.0 * 60.0;
    println!(
        "total: {:.2} G FMA instructions/s = {:.0} windows/s of the default shape at 100 % FMA use",
        total / 1e9,
        total / per_window
    );
}

/// FMA instructions per second on this thread for about `seconds`.
fn chains(seconds: f64) -> f64 {
    const ROUNDS: u64 = 10_000_000;
    let start = Instant::now();
    let mut done = 0u64;
    let mut sink = 0f32;
    while start.elapsed().as_secs_f64() < seconds {
        // black_box: the call is pure, and would otherwise be hoisted out of the loop.
        // SAFETY: AVX-512F was detected in main.
        sink += std::hint::black_box(unsafe { run(std::hint::black_box(ROUNDS)) });
        done += ROUNDS * 12;
    }
    std::hint::black_box(sink);
    done as f64 / start.elapsed().as_secs_f64()
}

#[target_feature(enable = "avx512f")]
fn run(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let b = _mm512_set1_ps(1.000_000_1);
    let c = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_setzero_ps(); 12];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_set1_ps(i as f32);
    }
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, b, c);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}
