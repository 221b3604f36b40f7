//! The open-loop rates a sweep offers: fractions of the maximum measured in
//! the same run, from light load to the knee and past it.

use super::results::SweepPoint;

/// Offered rates as fractions of the measured maximum; 0.5 is also the
/// "half the maximum rate" the targets are stated at.
pub const FRACTIONS: [f64; 6] = [0.10, 0.25, 0.50, 0.75, 0.90, 1.00];

/// The point at half the maximum, if the sweep has it.
pub fn at_half(points: &[SweepPoint]) -> Option<&SweepPoint> {
    points
        .iter()
        .find(|point| (point.fraction - 0.5).abs() < 1e-9)
}
