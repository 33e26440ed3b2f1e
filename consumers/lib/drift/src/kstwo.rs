//! The two-sided one-sample Kolmogorov distribution `D_n` for finite `n`, as SciPy computes
//! it: `scipy.stats.kstwo.sf(d, n)`.
//!
//! `scipy.stats.ks_2samp(method="asymp")` (and its default for samples above 10,000 rows)
//! takes the two-sided p-value of a two-sample statistic `D` from this distribution with
//! `n = round(m*n / (m+n))`, so [`ks_2samp_pvalue`] is exactly that composition.
//!
//! This is a port of SciPy 1.17's `scipy/stats/_ksstats.py` (`_kolmogn` and the methods it
//! picks between, after Simard & L'Ecuyer 2011) and of the one-sided Smirnov survival
//! function `scipy.special.smirnov` from xsf's `cephes/kolmogorov.h`, including its
//! double-double arithmetic. The branch structure and cut-offs are SciPy's; the matrix
//! products and sums are evaluated in a different order, so results agree to rounding
//! error rather than bit for bit (checked against SciPy in `tests/scipy_fixtures.rs`).
//!
//! Our own code because statrs, which serves the chi-square test, has no finite-sample
//! Kolmogorov distribution: only the asymptotic one would be at hand, and it misses SciPy's
//! p-values by orders of magnitude in the tails that drift alarms are decided in.

use std::f64::consts::{LN_2, PI};

/// `scipy.stats.kstwo.sf(d, n)`: P(D_n >= d) for the two-sided one-sample statistic.
///
/// Returns NaN for NaN `d` or `n == 0`; 1 for `d <= 0.5/n` and 0 for `d >= 1` (the
/// distribution's support), and 0 where SciPy's algorithm underflows (`n d^2 >= 370`
/// for `n > 140`).
pub fn kstwo_sf(d: f64, n: u64) -> f64 {
    if d.is_nan() || n == 0 {
        return f64::NAN;
    }
    let nf = n as f64;
    // rv_continuous.sf: 1 at or below the lower end of the support, 0 at or above 1.
    if d <= 0.5 / nf {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    kolmogn_sf(n, d)
}

/// The asymptotic two-sided p-value of a two-sample KS statistic `d` for samples of
/// sizes `n1` and `n2`, as `scipy.stats.ks_2samp(..., method="asymp")` computes it:
/// `kstwo.sf(d, round(m*n/(m+n)))` (round half to even, like `np.round`), clipped to [0, 1].
/// NaN when either size is 0.
pub fn ks_2samp_pvalue(d: f64, n1: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return f64::NAN;
    }
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = m * n / (m + n);
    let n_eff = en.round_ties_even();
    if n_eff < 1.0 {
        return f64::NAN;
    }
    kstwo_sf(d, n_eff as u64).clamp(0.0, 1.0)
}

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// SciPy's `_kolmogn(n, x, cdf=False)`.
fn kolmogn_sf(n: u64, x: f64) -> f64 {
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben-Gambino: 1/2n <= x <= 1/n.
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            let mut p = 1.0;
            for i in 1..=n {
                p *= i as f64 * (1.0 / nf) * (2.0 * t - 1.0);
            }
            p
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - prob);
    }
    if t >= nf - 1.0 {
        // Ruben-Gambino.
        return clip(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        // Exact: 2 * smirnov.
        return clip(2.0 * smirnov_sf(n, x));
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip(1.0 - kolmogn_dmtw_cdf(n, x));
        }
        if nxsquared <= 4.0 {
            return clip(1.0 - kolmogn_pomeranz_cdf(n, x));
        }
        // Miller's approximation: 2 * smirnov.
        return clip(2.0 * smirnov_sf(n, x));
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    // The SF is 1 - CDF here.
    let cdf = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, x)
    } else {
        kolmogn_pelz_good_cdf(n, x)
    };
    clip(1.0 - cdf)
}

// SciPy's literals, digit for digit (B_2j / (2j) / (2j-1), j = 8..1).
#[allow(clippy::excessive_precision)]
const STIRLING_COEFFS: [f64; 8] = [
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
];

/// log(n! / n^n) by Stirling's series with the n log n term removed up front.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    let rn = 1.0 / n;
    let x = rn / n;
    let poly = STIRLING_COEFFS.iter().fold(0.0, |acc, c| acc * x + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * poly
}

const E128: i32 = 128;
const EP128: f64 = f64::from_bits(0x47f0_0000_0000_0000); // 2^128
const EM128: f64 = f64::from_bits(0x37f0_0000_0000_0000); // 2^-128

/// A dense square matrix, row major.
struct Matrix {
    m: usize,
    a: Vec<f64>,
}

impl Matrix {
    fn zeros(m: usize) -> Self {
        Self {
            m,
            a: vec![0.0; m * m],
        }
    }

    fn identity(m: usize) -> Self {
        let mut i = Self::zeros(m);
        for k in 0..m {
            i.a[k * m + k] = 1.0;
        }
        i
    }

    fn get(&self, r: usize, c: usize) -> f64 {
        self.a[r * self.m + c]
    }

    fn set(&mut self, r: usize, c: usize, v: f64) {
        self.a[r * self.m + c] = v;
    }

    fn mul(&self, other: &Matrix) -> Matrix {
        let m = self.m;
        let mut out = Matrix::zeros(m);
        for i in 0..m {
            let row = &self.a[i * m..(i + 1) * m];
            let out_row = &mut out.a[i * m..(i + 1) * m];
            for (k, &aik) in row.iter().enumerate() {
                if aik == 0.0 {
                    continue;
                }
                let other_row = &other.a[k * m..(k + 1) * m];
                for (o, &b) in out_row.iter_mut().zip(other_row) {
                    *o += aik * b;
                }
            }
        }
        out
    }
}

/// Pr(D_n <= d) by the Durbin matrix algorithm as Marsaglia, Tsang and Wang evaluate it.
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut hm = Matrix::zeros(m);
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;
    for i in 1..m {
        for (r, &wv) in (i - 1..m).zip(&w[..m - i + 1]) {
            hm.set(r, i, wv);
        }
    }
    for (r, &vv) in v.iter().enumerate() {
        hm.set(r, 0, vv);
    }
    for (c, &vv) in v.iter().rev().enumerate() {
        hm.set(m - 1, c, vv);
    }

    let mut hpwr = Matrix::identity(m);
    let mut nn = n;
    let mut expnt: i32 = 0;
    let mut hexpnt: i32 = 0;
    while nn > 0 {
        if nn % 2 == 1 {
            hpwr = hpwr.mul(&hm);
            expnt += hexpnt;
        }
        nn /= 2;
        if nn == 0 {
            break; // SciPy squares once more; the square is never used.
        }
        hm = hm.mul(&hm);
        hexpnt *= 2;
        if hm.get(k - 1, k - 1).abs() > EP128 {
            for a in &mut hm.a {
                *a /= EP128;
            }
            hexpnt += E128;
        }
    }
    let mut p = hpwr.get(k - 1, k - 1);
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    clip(p)
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1).div_euclid(2), (i + 1).rem_euclid(2));
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pr(D_n <= x) by Pomeranz's recursion.
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let ni = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![1.0; npwrs];
    let mut twogpower = vec![1.0; npwrs];
    let mut onem2gpower = vec![1.0; npwrs];
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) =
        (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt: i32 = 0;
    let (mut j1, _) = pomeranz_j1j2(0, ni, ll, ceilf, roundf);
    for i in 1..(2 * ni + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (nj1, j2) = pomeranz_j1j2(i, ni, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let start = (k1 - v0s).max(0) as usize;
            let a = &v0[start.min(npwrs)..(start + ln2 as usize).min(npwrs)];
            let b = &pwrs[..(ln2 as usize).min(npwrs)];
            let conv_start = (j1 - k1).max(0) as usize;
            let conv_len = (j2 - j1 + 1).max(0) as usize;
            // Entries [conv_start, conv_start + conv_len) of the full convolution a * b.
            for (idx, out) in v1.iter_mut().enumerate().take(conv_len) {
                let c = conv_start + idx;
                let mut s = 0.0;
                let lo = c.saturating_sub(b.len().saturating_sub(1));
                for (ai, &av) in a.iter().enumerate().take(c + 1).skip(lo) {
                    s += av * b[c - ai];
                }
                *out = s;
            }
            let max = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < max && max < EM128 {
                for v in &mut v1 {
                    *v *= EP128;
                }
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let idx = ni - v1s;
    let mut ans = if (0..npwrs as i64).contains(&idx) {
        v1[idx as usize]
    } else {
        0.0
    };
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    clip(ans)
}

/// The Pelz-Good approximation to Pr(D_n <= x).
fn kolmogn_pelz_good_cdf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let pi2 = PI.powf(2.0);
    let pi4 = PI.powf(4.0);
    let pi6 = PI.powf(6.0);
    let sqrt2pi = (2.0 * PI).sqrt();
    let z = nf.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z.powf(2.0), z.powf(3.0), z.powf(4.0), z.powf(6.0));
    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powf(8.0);

    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (msquared, mfour, msix) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * msquared,
            k2a + k2b * msquared + k2c * mfour,
            k3a + k3b * msquared + k3c * mfour + k3d * msix,
        ];
        for (kv, c) in k.iter_mut().zip(coeffs) {
            *kv = *kv * qpower + c;
        }
    }
    let div = [z, 6.0 * zfour, 72.0 * z.powf(7.0), 6480.0 * z.powf(10.0)];
    for (kv, dv) in k.iter_mut().zip(div) {
        *kv = *kv * q * sqrt2pi / dv;
    }
    let q = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ksquared = (kk * kk) as f64;
        let kspi = PI * kk as f64;
        let qpwer = q.powf(ksquared);
        k2extra += ksquared * qpwer;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwer;
    }
    k[2] += k2extra * (pi2 * sqrt2pi / (-36.0 * zthree));
    k[3] += k3extra * (pi2 * sqrt2pi / (216.0 * zsix));
    for (i, kv) in k.iter_mut().enumerate() {
        *kv /= nf.powf(i as f64 / 2.0);
    }
    k.iter().sum()
}

// ---------------------------------------------------------------------------------------
// Smirnov's one-sided distribution (xsf cephes/kolmogorov.h), in double-double arithmetic.

/// cephes' MINLOG: log(2^-1075).
const MINLOG: f64 = -7.451_332_191_019_412e2;
const SMIRNOV_MAX_COMPUTE_N: i32 = 1_000_000;
const SM_UPPER_MAX_TERMS: i32 = 3;
const SM_UPPERSUM_MIN_N: i32 = 10;
const SM_MAX_EXPONENT: i32 = 960;

/// `scipy.special.smirnov(n, x)`: P(D_n^+ >= x).
pub(crate) fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x.is_nan() || n > i32::MAX as u64 {
        return f64::NAN;
    }
    smirnov(n as i32, x)
}

fn smirnov(n: i32, x: f64) -> f64 {
    if !(n > 0 && (0.0..=1.0).contains(&x)) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = f64::from(n);
    let (alpha, nxfl, _nx) = mod_nx(n, x);
    let mut n1mxfl = n - nxfl - if alpha == 0.0 { 0 } else { 1 };
    let mut n1mxceil = n - nxfl;
    // If alpha is 0, the last term belongs to neither sum.
    if alpha == 0.0 {
        n1mxfl -= 1;
        n1mxceil += 1;
    }
    // x <= 1/n
    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        let t = pow2(1.0, x, n - 1);
        let cdf = x * t;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    // The SF underflows.
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    // x >= 1 - 1/n
    if nxfl >= n - 1 {
        return pow2(1.0, -x, n).clamp(0.0, 1.0);
    }
    if n > SMIRNOV_MAX_COMPUTE_N {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        let sf = if logp < -LN_2 {
            logp.exp()
        } else {
            1.0 - (-logp.exp_m1())
        };
        return sf.clamp(0.0, 1.0);
    }
    let n_upper_terms = n - n1mxceil + 1;
    let use_upper = (n_upper_terms <= 1 && x < 0.5)
        || (n >= SM_UPPERSUM_MIN_N && n_upper_terms <= SM_UPPER_MAX_TERMS && x <= 0.5 / nf.sqrt());
    if !use_upper && n1mxfl + 1 > SM_LOG_SUM_MIN_TERMS {
        return smirnov_log_sum(n, x, nxfl, alpha, n1mxfl).clamp(0.0, 1.0);
    }

    let (start, step, n_terms);
    let mut cman = Dd::from(1.0);
    let mut cexpt: i32 = 0;
    let vmid = n / 2;
    let mut aj_sum = Dd::from(0.0);
    let first_aj = if use_upper {
        start = n;
        step = -1;
        n_terms = n - n1mxceil + 1;
        pow4_d(1.0, x, 1.0, 0.0, n - 1)
    } else {
        start = 0;
        step = 1;
        n_terms = n1mxfl + 1;
        pow4_d(1.0, -x, 1.0, 0.0, n).div_f(x)
    };
    aj_sum = aj_sum.add(first_aj);
    update_binomial(&mut cman, &mut cexpt, n, 0);
    for j in 1..n_terms {
        let v = start + j * step;
        let aj = compute_av(n, x, v, cman, cexpt);
        if aj.hi.is_finite() && !aj.is_zero() {
            aj_sum = aj_sum.add(aj);
        }
        if !aj.is_zero() {
            if (4.0 * f64::from(n_terms - j) * aj.hi.abs()) < (f64::EPSILON * aj_sum.hi)
                && j != n_terms - 1
            {
                break;
            }
        } else if j > vmid {
            break;
        }
        update_binomial(&mut cman, &mut cexpt, n, j);
    }
    let prob = Dd::f_mul(x, aj_sum).hi;
    let sf = if step < 0 { 1.0 - prob } else { prob };
    sf.clamp(0.0, 1.0)
}

/// Above this many terms the lower sum is taken in log space around its largest term.
const SM_LOG_SUM_MIN_TERMS: i32 = 64;

/// x * sum_{v=0}^{last} A_v(n, x), for long sums (large n).
///
/// xsf adds every term in double-double arithmetic, which for n = 12,500 and a drifted
/// column means ~12,000 terms and ~6 ms. The terms are log-concave in v (the binomial
/// coefficient is, and for n*x >= 1 the two power factors keep the sum concave), so they
/// rise to one peak and fall away geometrically on both sides: this sums them outward
/// from the peak, in log space, until what is left cannot reach 1e-18 of the sum. Each
/// log-term is accurate to about 1e-12 relative (the cancelling `n - v - n*x` is formed
/// from the exact floor and remainder of `n*x`), far inside SciPy's agreement tolerance.
fn smirnov_log_sum(n: i32, x: f64, nxfl: i32, alpha: f64, last: i32) -> f64 {
    let nf = f64::from(n);
    let ln_n = nf.ln();
    // ln of the power factors of A_v: (n-v) ln((n-v-nx)/n) + (v-1) ln((nx+v)/n).
    let powers = |v: i32| {
        let below = f64::from(n - v - nxfl) - alpha;
        let above = f64::from(nxfl + v) + alpha;
        f64::from(n - v) * (below.ln() - ln_n) + f64::from(v - 1) * (above.ln() - ln_n)
    };
    let ln_binom = |v: i32| ln_factorial(n) - ln_factorial(v) - ln_factorial(n - v);
    let ln_term = |v: i32| ln_binom(v) + powers(v);

    // The peak: the first v whose successor is not larger (the terms are unimodal).
    let (mut lo, mut hi) = (0, last);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if ln_term(mid + 1) > ln_term(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let peak = lo;
    let ln_peak = ln_term(peak);
    let mut sum = 1.0; // in units of the peak term
    // Walk one way from the peak; `step_binom(v)` is ln C(n, next) - ln C(n, v).
    let mut walk = |start: i32, step: i32, step_binom: &dyn Fn(i32) -> f64| {
        let (mut v, mut ln_c, mut prev) = (start, ln_binom(start), 1.0f64);
        loop {
            ln_c += step_binom(v);
            v += step;
            if v < 0 || v > last {
                break;
            }
            let t = (ln_c + powers(v) - ln_peak).exp();
            sum += t;
            // Past the peak the ratio of successive terms only falls, so the rest is at
            // most t * r / (1 - r).
            let r = t / prev;
            if r < 1.0 && t * r / (1.0 - r) < 1e-18 * sum {
                break;
            }
            prev = t;
        }
    };
    walk(peak, 1, &|v| (f64::from(n - v) / f64::from(v + 1)).ln());
    walk(peak, -1, &|v| (f64::from(v) / f64::from(n - v + 1)).ln());
    (x.ln() + ln_peak + sum.ln()).exp()
}

/// ln(m!): summed exactly for small m, Stirling's series above.
fn ln_factorial(m: i32) -> f64 {
    if m < 32 {
        (2..=m).map(|i| f64::from(i).ln()).sum()
    } else {
        let mf = f64::from(m);
        log_nfactorial_div_n_pow_n(mf) + mf * mf.ln()
    }
}

/// floor(n*x) and the remainder, exactly.
fn mod_nx(n: i32, x: f64) -> (f64, i32, f64) {
    let nx_d = Dd::f_mul(f64::from(n), Dd::from(x));
    let nxfloor_d = nx_d.floor();
    let alpha_d = nx_d.sub(nxfloor_d);
    let mut alpha = alpha_d.hi;
    let mut nxfloor = nxfloor_d.hi as i32;
    if alpha == 1.0 {
        nxfloor += 1;
        alpha = 0.0;
    }
    (alpha, nxfloor, nx_d.hi)
}

/// C(n, j+1) from C(n, j), kept as a mantissa in [0.5, 1) and a binary exponent.
fn update_binomial(cman: &mut Dd, cexpt: &mut i32, n: i32, j: i32) {
    let rat = Dd::from(f64::from(n - j)).div_f(f64::from(j) + 1.0);
    let (man2, expt) = cman.mul(rat).frexp();
    *cexpt += expt;
    *cman = man2;
}

fn pow_d(a: Dd, m: i32) -> Dd {
    if m <= 0 {
        if m == 0 {
            return Dd::from(1.0);
        }
        return Dd::f_div(1.0, pow_d(a, -m));
    }
    if a.is_zero() {
        return Dd::from(0.0);
    }
    let ans = a.hi.powf(f64::from(m));
    let r = a.lo / a.hi;
    let mf = f64::from(m);
    let mut adj = mf * r;
    if adj.abs() > 1e-8 {
        if adj.abs() < 1e-4 {
            // The first two terms of the Taylor series of (1+r)^m.
            adj += (mf * r) * ((mf - 1.0) / 2.0 * r);
        } else {
            adj = (mf * r.ln_1p()).exp_m1();
        }
    }
    Dd::from(ans).add_f(ans * adj)
}

fn pow2(a: f64, b: f64, m: i32) -> f64 {
    pow_d(Dd::from(a).add_f(b), m).hi
}

/// The double nearest above `x` in magnitude, as xsf computes it.
fn next_power_of_2(x: f64) -> f64 {
    let q = ldexp(x, 1 - f64::MANTISSA_DIGITS as i32);
    let mut l = (q + x).abs();
    if l == 0.0 {
        l = x.abs();
    } else {
        let lint = l as i32;
        if f64::from(lint) == l {
            l = f64::from(lint);
        }
    }
    l
}

/// a^m as (significand, binary exponent).
fn pow2_scaled_d(a: Dd, m: i32) -> (Dd, i32) {
    if m <= 0 {
        if m == 0 {
            return (Dd::from(1.0), 0);
        }
        let (ans, ae1) = pow2_scaled_d(a, -m);
        let (ans, ae2) = Dd::f_div(1.0, ans).frexp();
        return (ans, -ae1 + ae2);
    }
    let (y, ye) = a.frexp();
    if m == 1 {
        return (y, ye);
    }
    let mut max_expt = SM_MAX_EXPONENT;
    // y^m may underflow: find a power that does not.
    if f64::from(m) * (y.hi - 1.0) / y.hi < -f64::from(SM_MAX_EXPONENT) * LN_2 {
        let lg2y = y.hi.ln() / LN_2;
        let lg_ans = f64::from(m) * lg2y;
        if lg_ans <= -f64::from(SM_MAX_EXPONENT) {
            max_expt = (next_power_of_2(-f64::from(SM_MAX_EXPONENT) / lg2y + 1.0) / 2.0) as i32;
        }
    }
    if m <= max_expt {
        let (ans, mut ans_e) = pow_d(y, m).frexp();
        ans_e += m * ye;
        return (ans, ans_e);
    }
    let q = m / max_expt;
    let r = m % max_expt;
    // y^m = (y^max_expt)^q * y^r
    let (y2r, y2r_e) = pow2_scaled_d(y, r);
    let (y2m, y2m_e) = pow2_scaled_d(y, max_expt);
    let (y2mq, mut y2mq_e) = pow2_scaled_d(y2m, q);
    let (ans, mut ans_e) = y2r.mul(y2mq).frexp();
    y2mq_e += y2m_e * q;
    ans_e += y2mq_e + y2r_e;
    ans_e += m * ye;
    (ans, ans_e)
}

/// ((a+b)/(c+d))^m
fn pow4_d(a: f64, b: f64, c: f64, d: f64, m: i32) -> Dd {
    if m <= 0 {
        if m == 0 {
            return Dd::from(1.0);
        }
        return pow4_d(c, d, a, b, -m);
    }
    let aa = Dd::from(a).add_f(b);
    let cc = Dd::from(c).add_f(d);
    if aa.is_zero() {
        return if cc.is_zero() {
            Dd::new(f64::NAN, f64::NAN)
        } else {
            Dd::from(0.0)
        };
    }
    if cc.is_zero() {
        let inf = if aa.hi < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        return Dd::new(inf, inf);
    }
    pow_d(aa.div(cc), m)
}

/// One term of the sum: A_v(n, x) = C(n,v) (1-x-v/n)^(n-v) (x+v/n)^(v-1).
fn compute_av(n: i32, x: f64, v: i32, cman: Dd, cexpt: i32) -> Dd {
    let nf = f64::from(n);
    let t2x = Dd::from(f64::from(n - v)).div_f(nf).sub_f(x);
    let (t2, t2e) = pow2_scaled_d(t2x, n - v);
    let t1x = Dd::from(f64::from(v)).div_f(nf).add_f(x);
    let (t1, t1e) = pow2_scaled_d(t1x, v - 1);
    let ans = t1.mul(t2).mul(cman);
    ans.ldexp(cexpt + t1e + t2e)
}

/// A double-double: an unevaluated sum hi + lo with |lo| <= ulp(hi)/2 (qd's algorithms).
#[derive(Debug, Clone, Copy)]
struct Dd {
    hi: f64,
    lo: f64,
}

fn quick_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let e = b - (s - a);
    (s, e)
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let c = s - a;
    let d = b - c;
    let e = s - c;
    (s, (a - e) + d)
}

fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl From<f64> for Dd {
    fn from(hi: f64) -> Self {
        Self { hi, lo: 0.0 }
    }
}

impl Dd {
    fn new(hi: f64, lo: f64) -> Self {
        Self { hi, lo }
    }

    fn is_zero(self) -> bool {
        self.hi == 0.0 && self.lo == 0.0
    }

    fn neg(self) -> Self {
        Self::new(-self.hi, -self.lo)
    }

    fn add(self, rhs: Dd) -> Dd {
        let (s1, s2) = two_sum(self.hi, rhs.hi);
        let (t1, t2) = two_sum(self.lo, rhs.lo);
        let (s1, s2) = quick_two_sum(s1, s2 + t1);
        let (s1, s2) = quick_two_sum(s1, s2 + t2);
        Dd::new(s1, s2)
    }

    fn add_f(self, rhs: f64) -> Dd {
        let (s1, s2) = two_sum(self.hi, rhs);
        let (s1, s2) = quick_two_sum(s1, s2 + self.lo);
        Dd::new(s1, s2)
    }

    fn sub(self, rhs: Dd) -> Dd {
        self.add(rhs.neg())
    }

    fn sub_f(self, rhs: f64) -> Dd {
        let (s1, s2) = two_sum(self.hi, -rhs);
        let (s1, s2) = quick_two_sum(s1, s2 + self.lo);
        Dd::new(s1, s2)
    }

    fn mul(self, rhs: Dd) -> Dd {
        let (p1, p2) = two_prod(self.hi, rhs.hi);
        let p2 = p2 + (self.hi * rhs.lo + self.lo * rhs.hi);
        let (p1, p2) = quick_two_sum(p1, p2);
        Dd::new(p1, p2)
    }

    fn f_mul(lhs: f64, rhs: Dd) -> Dd {
        let (p1, e1) = two_prod(lhs, rhs.hi);
        let (p2, e2) = two_prod(lhs, rhs.lo);
        let (p1, e1) = quick_two_sum(p1, e2 + p2 + e1);
        Dd::new(p1, e1)
    }

    fn div(self, rhs: Dd) -> Dd {
        let q1 = self.hi / rhs.hi;
        let r = self.sub(rhs.mul(Dd::from(q1)));
        let q2 = r.hi / rhs.hi;
        let r = r.sub(rhs.mul(Dd::from(q2)));
        let q3 = r.hi / rhs.hi;
        let (q1, q2) = quick_two_sum(q1, q2);
        Dd::new(q1, q2).add_f(q3)
    }

    fn div_f(self, rhs: f64) -> Dd {
        self.div(Dd::from(rhs))
    }

    fn f_div(lhs: f64, rhs: Dd) -> Dd {
        Dd::from(lhs).div(rhs)
    }

    fn floor(self) -> Dd {
        let mut hi = self.hi.floor();
        let mut lo = 0.0;
        if hi == self.hi {
            // hi is an integer already: round the low word.
            let (h, l) = quick_two_sum(hi, self.lo.floor());
            hi = h;
            lo = l;
        }
        Dd::new(hi, lo)
    }

    fn ldexp(self, e: i32) -> Dd {
        Dd::new(ldexp(self.hi, e), ldexp(self.lo, e))
    }

    /// (b, e) with 0.5 <= |b.hi| < 1 (or |b.hi| == 1 and b.hi*b.lo < 0) and b * 2^e == self.
    fn frexp(self) -> (Dd, i32) {
        let (mut man, mut exponent) = frexp(self.hi);
        let mut b1 = ldexp(self.lo, -exponent);
        if man.abs() == 0.5 && man * b1 < 0.0 {
            man *= 2.0;
            b1 *= 2.0;
            exponent -= 1;
        }
        (Dd::new(man, b1), exponent)
    }
}

/// C's frexp: x = m * 2^e with 0.5 <= |m| < 1 (m = x, e = 0 for 0, infinities and NaN).
pub(crate) fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (m, e - 54);
    }
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (m, biased - 1022)
}

/// C's ldexp (musl's scalbn): x * 2^e with one rounding.
pub(crate) fn ldexp(x: f64, mut e: i32) -> f64 {
    let p1023 = f64::from_bits(0x7fe0_0000_0000_0000); // 2^1023
    let pm969 = f64::from_bits(0x0360_0000_0000_0000); // 2^-1022 * 2^53
    let mut y = x;
    if e > 1023 {
        y *= p1023;
        e -= 1023;
        if e > 1023 {
            y *= p1023;
            e -= 1023;
            e = e.min(1023);
        }
    } else if e < -1022 {
        y *= pm969;
        e += 1022 - 53;
        if e < -1022 {
            y *= pm969;
            e += 1022 - 53;
            e = e.max(-1022);
        }
    }
    y * f64::from_bits(((0x3ff + e) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_constants_are_powers_of_two() {
        assert_eq!(EP128, 2f64.powi(128));
        assert_eq!(EM128, 2f64.powi(-128));
    }

    #[test]
    fn frexp_and_ldexp_round_trip_including_subnormals() {
        for x in [1.0, 0.75, -3.5, 1e-310, 5e-324, 1.7e308, 123456.789] {
            let (m, e) = frexp(x);
            assert!((0.5..1.0).contains(&m.abs()), "{x}: {m}");
            assert_eq!(ldexp(m, e), x);
        }
        assert_eq!(ldexp(1.0, -1074), 5e-324);
        assert_eq!(ldexp(1.0, 1024), f64::INFINITY);
        assert_eq!(ldexp(1.0, -1080), 0.0);
    }

    #[test]
    fn support_ends_are_one_and_zero() {
        assert_eq!(kstwo_sf(0.0, 10), 1.0);
        assert_eq!(kstwo_sf(0.05, 10), 1.0);
        assert_eq!(kstwo_sf(1.0, 10), 0.0);
        assert!(kstwo_sf(f64::NAN, 10).is_nan());
        assert!(kstwo_sf(0.3, 0).is_nan());
    }

    #[test]
    fn smirnov_of_one_observation_is_linear() {
        assert_eq!(smirnov(1, 0.25), 0.75);
        // smirnov(n, x) for x >= 1 - 1/n is (1-x)^n exactly.
        let want = (1.0f64 - 0.9).powi(5);
        assert!(((smirnov(5, 0.9) - want) / want).abs() < 1e-14);
    }

    #[test]
    fn pvalue_uses_the_rounded_effective_size() {
        // 3 * 5 / 8 = 1.875 rounds to 2.
        assert_eq!(ks_2samp_pvalue(0.6, 3, 5), kstwo_sf(0.6, 2));
        assert!(ks_2samp_pvalue(0.1, 0, 5).is_nan());
    }
}
