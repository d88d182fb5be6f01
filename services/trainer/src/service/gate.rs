//! The champion/challenger rule: a challenger is promoted only when it beats the serving version
//! on the held-out machines by the margin (and, with the realized gate, when the serving version's
//! realized accuracy does not beat it).

/// The promotion rule. `realized` is the serving version's realized MAE when the realized gate is
/// on and there is one.
pub fn gate(
    champion: Option<&str>,
    challenger_mae: Option<f64>,
    champion_mae: Option<f64>,
    margin: f64,
    realized: Option<f64>,
) -> (bool, String) {
    let Some(champion) = champion else {
        return (true, "promoted: first version of this model".into());
    };
    let Some(ch) = challenger_mae.filter(|m| m.is_finite()) else {
        return (
            false,
            "not promoted: the challenger could not be scored on held-out machines".into(),
        );
    };
    let Some(cm) = champion_mae.filter(|m| m.is_finite()) else {
        return (
            true,
            format!("promoted: the serving {champion} cannot be scored on the current data"),
        );
    };
    let need = cm * (1.0 - margin);
    if ch > need {
        return (
            false,
            format!(
                "not promoted: {ch:.2} is not {:.0}% better than {champion}'s {cm:.2} (needs <= {need:.2})",
                margin * 100.0
            ),
        );
    }
    if let Some(r) = realized
        && r < ch
    {
        return (
            false,
            format!(
                "not promoted: {champion}'s realized MAE {r:.2} is better than the challenger's {ch:.2}"
            ),
        );
    }
    (
        true,
        format!(
            "promoted: {ch:.2} beats {champion}'s {cm:.2} by more than {:.0}%",
            margin * 100.0
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_needs_the_margin_and_respects_realized_accuracy() {
        assert!(gate(None, None, None, 0.1, None).0);
        assert!(gate(Some("v1"), Some(8.9), Some(10.0), 0.1, None).0);
        let (p, why) = gate(Some("v1"), Some(9.5), Some(10.0), 0.1, None);
        assert!(!p && why.contains("not 10% better"), "{why}");
        assert!(!gate(Some("v1"), None, Some(10.0), 0.1, None).0);
        assert!(!gate(Some("v1"), Some(f64::NAN), Some(10.0), 0.1, None).0);
        assert!(gate(Some("v1"), Some(5.0), None, 0.1, None).0);
        let (p, why) = gate(Some("v1"), Some(5.0), Some(10.0), 0.1, Some(4.0));
        assert!(!p && why.contains("realized"), "{why}");
        assert!(gate(Some("v1"), Some(5.0), Some(10.0), 0.1, Some(6.0)).0);
    }
}
