import Dispatch

/// Prepares the next combined change of a plan (`CombinedFactors`: QR and
/// SVD for the SVD methods) on another thread while the current tensor
/// streams, so that the merge does not stop between tensors to compute
/// factors. Memory: one prepared change ahead.
///
/// Changes asked for in plan order (as the model pipelines ask) find theirs
/// ready or being computed; any other order prepares on the spot.
final class LookaheadPreparation: @unchecked Sendable {
    private struct Slot {
        var name: String
        var result: Result<LoRAPreparedChange, Error>?
    }

    private let plan: LoRAMergePlan
    private let slot = Locked<Slot?>(nil)

    init(plan: LoRAMergePlan) {
        self.plan = plan
    }

    /// The change prepared (its replacement left to the source, see
    /// `LoRAPreparedChange`), and the next combined one started.
    func prepared(_ change: LoRATensorChange, threads: Int) throws -> LoRAPreparedChange {
        let name = change.base.name
        let prepared: LoRAPreparedChange
        if slot.withLock({ $0?.name == name }) {
            let result = slot.withLock(when: { $0?.name != name || $0?.result != nil }) { slot -> Result<LoRAPreparedChange, Error>? in
                defer { slot = nil }
                return slot?.name == name ? slot?.result : nil
            }
            prepared = try result?.get() ?? prepare(change, threads: threads)
        } else {
            prepared = try prepare(change, threads: threads)
        }
        startNext(after: name, threads: threads)
        return prepared
    }

    private func prepare(_ change: LoRATensorChange, threads: Int) throws -> LoRAPreparedChange {
        try plan.prepare(change, decodeReplacement: false, threads: threads)
    }

    private func startNext(after name: String, threads: Int) {
        guard let index = plan.changes.firstIndex(where: { $0.base.name == name }),
              let next = plan.changes[(index + 1)...].first(where: { $0.combined != nil }) else { return }
        slot.withLock { $0 = Slot(name: next.base.name, result: nil) }
        DispatchQueue.global().async { [self] in
            let result = Result { try prepare(next, threads: threads) }
            slot.withLockWakingWaiters { if $0?.name == next.base.name { $0?.result = result } }
        }
    }
}
