"""The scheduler: `framework` (the snapshot and one scheduling cycle, pure), `plugins`
(upstream's default filters and scores), `scheduler` (the loop: queue, assume, bind)."""
