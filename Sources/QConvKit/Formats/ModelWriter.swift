/// The output half of the format seam: where a conversion writes a model.
///
/// A writer is made with everything it must know up front (the tensors in
/// order with their planned schemes, side files, metadata) and then takes the
/// tensors one by one: each time it hands the encoder a `PartSink` for the
/// tensor's parts. Nothing appears at the destination until `commit()`.
/// `CheckpointWriter` (safetensors file or folder) and `ContainerModelWriter`
/// are the two today.
public protocol ModelWriter: AnyObject {
    /// Writes the next tensor: `encode` writes its parts into the sink and
    /// returns the scheme it stored them with.
    func writeTensor(_ tensor: TensorInfo, _ encode: (PartSink) throws -> TensorScheme) throws
    /// Finishes the output and moves it into place.
    func commit() throws
    /// Removes everything written so far.
    func discard()
    /// Whether the tensor is written here (one part of a job array writes
    /// its own shards' tensors only); the conversion skips the others.
    func writes(_ tensor: TensorInfo) -> Bool
    /// The shards this writer writes when it is one part of a job array; nil otherwise.
    var partShards: PartShards? { get }
    /// The order in which tensors must come, by name, when the writer has
    /// one (shard by shard, as its plan laid them out); nil: any order.
    var writingOrder: [String]? { get }
}

extension ModelWriter {
    public func writes(_ tensor: TensorInfo) -> Bool { true }
    public var partShards: PartShards? { nil }
    public var writingOrder: [String]? { nil }
}
