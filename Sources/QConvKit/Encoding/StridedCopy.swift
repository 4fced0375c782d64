/// Writes a strided view (`TensorScheme.strided`) as one contiguous raw
/// part: its elements gathered in row-major order, about 256 KB at a time,
/// into the part the sink reserves. What copying a non-contiguous tensor of
/// a PyTorch checkpoint is, for every output format.
enum StridedCopy {
    static func write(_ tensor: ModelTensor, into sink: PartSink, context: EncodingContext) throws {
        guard case .strided(let layout) = tensor.scheme, let width = tensor.info.dtype.byteWidth else {
            preconditionFailure("\(tensor.name) is not a strided view of whole-byte elements")
        }
        let region = try sink.reserve(PartLayout(.data, tensor.info.dtype, tensor.info.shape))
        let output = context.copyBuffers.bytes(0)
        let piece = max(1, output.count / width)
        // A window of the stored bytes each piece lies in, when they are close together.
        let window = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { window.deallocate() }
        let stored = tensor.parts[0].bytes
        var start = 0
        while start < tensor.info.elementCount {
            let range = start..<min(tensor.info.elementCount, start + piece)
            try layout.gather(range, shape: tensor.info.shape, width: width, from: stored.file, first: stored.offset,
                              into: output.baseAddress!, window: window)
            let bytes = UnsafeRawBufferPointer(rebasing: output[0..<(range.count * width)])
            try region.write(bytes, at: range.lowerBound * width)
            if sink.needsBytesInOrder { sink.hashInOrder(bytes) }
            start = range.upperBound
        }
        try sink.endReserved()
    }
}
