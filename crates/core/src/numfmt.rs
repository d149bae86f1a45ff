//! Number formatting for people: `1,000,000` and `32.0 MB`.

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units, as the seed's pidmon prints them (1 MB = 10^6 bytes).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// A signed count in three significant digits: `+1.00M`, `+12.3k`, `-950`, `0`.
pub fn compact(n: i64) -> String {
    let sign = match n.signum() {
        1 => "+",
        -1 => "-",
        _ => "",
    };
    let m = n.unsigned_abs() as f64;
    if m < 1000.0 {
        return format!("{sign}{m}");
    }
    // Round to three significant digits first, so that 999,945 reads +1.00M, not +999k.
    let step = 10f64.powi(m.log10().floor() as i32 - 2);
    let rounded = (m / step).round() * step;
    let (value, unit) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|&(scale, _)| rounded >= scale)
        .map(|(scale, unit)| (rounded / scale, unit))
        .unwrap_or((rounded, ""));
    let decimals = 2usize.saturating_sub(value.log10().floor() as usize);
    format!("{sign}{value:.decimals$}{unit}")
}

/// A rate: whole numbers grouped by three, others with one decimal.
pub fn rate(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        thousands(x.round() as u64)
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn compact_has_three_significant_digits() {
        assert_eq!(compact(1_000_048), "+1.00M");
        assert_eq!(compact(12_345), "+12.3k");
        assert_eq!(compact(456_789), "+457k");
        assert_eq!(compact(-950), "-950");
        assert_eq!(compact(0), "0");
        assert_eq!(compact(999_945), "+1.00M");
        assert_eq!(compact(-4_000), "-4.00k");
    }

    #[test]
    fn rates() {
        assert_eq!(rate(1000.0), "1,000");
        assert_eq!(rate(0.25), "0.2");
        assert_eq!(rate(2.5), "2.5");
    }

    #[test]
    fn bytes_uses_decimal_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(32_000_000), "32.0 MB");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(bytes(2_000_000_000), "2.0 GB");
    }
}
