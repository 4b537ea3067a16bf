"""pitlane: real-time trigger engine for car makers and dealers."""
