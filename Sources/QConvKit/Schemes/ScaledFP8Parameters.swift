/// The parameters of an FP8 weight and its scale tensor (FACTS.md, "FP8
/// checkpoints"): `float32(w[i][j]) × scale`, where the scale is one
/// number, one per row, or one per block of rows and columns.
public struct ScaledFP8Parameters: Equatable, Sendable {
    public enum Granularity: Equatable, Sendable {
        /// One scale for the tensor (compressed-tensors' `tensor` strategy).
        case tensor
        /// One per row (`channel`): `weight_scale` `[out, 1]`.
        case channel
        /// One per block of `rows × columns` (DeepSeek-V3's `weight_block_size`,
        /// `weight_scale_inv`): `[ceil(out / rows), ceil(in / columns)]`.
        case block(rows: Int, columns: Int)
    }

    public var granularity: Granularity
    /// `F8_E4M3` or `F8_E5M2`.
    public var valuesDType: DType
    /// A float dtype (F32 in DeepSeek-V3 checkpoints, BF16 in some compressed-tensors ones).
    public var scaleDType: DType
    public var scaleShape: [Int]
    /// The scale tensor's name in the checkpoint.
    public var scaleName: String

    public init(granularity: Granularity, valuesDType: DType, scaleDType: DType, scaleShape: [Int], scaleName: String) {
        self.granularity = granularity
        self.valuesDType = valuesDType
        self.scaleDType = scaleDType
        self.scaleShape = scaleShape
        self.scaleName = scaleName
    }

    /// "block 128x128", "channel" or "tensor", for reports.
    public var granularityDescription: String {
        switch granularity {
        case .tensor: return "tensor"
        case .channel: return "channel"
        case let .block(rows, columns): return "block \(rows)x\(columns)"
        }
    }
}
