//! The loss whose output gradients PTQ4ViT's metric squares ([`vitq_core::hessian`]).

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use vitq_core::hessian::fisher_probe_loss;

type A = Autodiff<Flex>;

/// The gradient of [`fisher_probe_loss`] with respect to the logits is `v / N` with `v` of covariance
/// `F = diag(p) − p pᵀ` (the Fisher of the softmax, the Hessian of the KL divergence at the float
/// point): over many rows with the same logits, each gradient row sums to zero and their empirical
/// covariance matches `F` entry by entry.
#[test]
fn fisher_probe_gradients_have_the_softmax_fisher_covariance() {
    let (rows, classes) = (20_000, 5);
    let z0 = [2.0f32, 0.5, -1.0, 0.0, 1.0];
    let data: Vec<f32> = (0..rows).flat_map(|_| z0).collect();
    let device = Default::default();
    let logits =
        Tensor::<A, 2>::from_data(TensorData::new(data, [rows, classes]), &device).require_grad();
    let grads = fisher_probe_loss(logits.clone(), 7).unwrap().backward();
    let g = logits.grad(&grads).expect("gradient of the logits");
    let g: Vec<f32> = g.into_data().convert::<f32>().into_vec().unwrap();
    let p: Vec<f32> = softmax(
        Tensor::<Flex, 2>::from_data(TensorData::new(z0.to_vec(), [1, classes]), &device),
        1,
    )
    .into_data()
    .convert::<f32>()
    .into_vec()
    .unwrap();
    let mut cov = vec![0f64; classes * classes];
    for row in g.chunks_exact(classes) {
        let v: Vec<f64> = row.iter().map(|&x| f64::from(x) * rows as f64).collect();
        assert!(v.iter().sum::<f64>().abs() < 1e-4, "{v:?}");
        for i in 0..classes {
            for j in 0..classes {
                cov[i * classes + j] += v[i] * v[j] / rows as f64;
            }
        }
    }
    for i in 0..classes {
        for j in 0..classes {
            let fisher = f64::from(p[i]) * (f64::from(i == j) - f64::from(p[j]));
            let got = cov[i * classes + j];
            assert!(
                (got - fisher).abs() < 0.01,
                "[{i}, {j}]: {got:.4} vs {fisher:.4}"
            );
        }
    }
}

/// The probe is reproducible: the same logits give the same gradient; other logits another one (through
/// their softmax).
#[test]
fn fisher_probe_is_reproducible() {
    let device = Default::default();
    let grad = |z: Vec<f32>| -> Vec<f32> {
        let t = Tensor::<A, 2>::from_data(TensorData::new(z, [2, 4]), &device).require_grad();
        let g = fisher_probe_loss(t.clone(), 7).unwrap().backward();
        t.grad(&g)
            .unwrap()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap()
    };
    let z = vec![0.1, 0.2, 0.3, 0.4, -1.0, 0.0, 1.0, 2.0];
    assert_eq!(grad(z.clone()), grad(z.clone()));
    let mut other = z.clone();
    other[0] = 0.11;
    assert_ne!(grad(z), grad(other));
}
