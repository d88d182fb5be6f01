//! Threshold crossings with hysteresis: one alert when a machine's forecast falls below the
//! threshold, one when it recovers above threshold + hysteresis, nothing in between.

use maintcast_proto::AlertState;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertRule {
    pub threshold_days: f64,
    pub hysteresis_days: f64,
}

impl AlertRule {
    /// Given whether the last alert was "due" and a new forecast, the alert to send (if any).
    /// `currently_due` is the state of the newest alert sent, delivered or still pending: the
    /// window keeps the delivered state, and the caller stores a new one only when Kafka's
    /// delivery report arrives (a pending alert is not sent twice).
    pub fn evaluate(&self, currently_due: bool, days: f64) -> Option<AlertState> {
        if !currently_due && days < self.threshold_days {
            Some(AlertState::Due)
        } else if currently_due && days > self.threshold_days + self.hysteresis_days {
            Some(AlertState::Recovered)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_crossing() {
        let rule = AlertRule {
            threshold_days: 10.0,
            hysteresis_days: 2.0,
        };
        let mut due = false;
        let mut sent = Vec::new();
        for days in [20.0, 11.0, 9.5, 8.0, 10.5, 9.0, 11.9, 12.1, 13.0, 9.9] {
            if let Some(a) = rule.evaluate(due, days) {
                due = a == AlertState::Due;
                sent.push((days, a));
            }
        }
        assert_eq!(
            sent,
            vec![
                (9.5, AlertState::Due),
                (12.1, AlertState::Recovered),
                (9.9, AlertState::Due)
            ]
        );
    }
}
