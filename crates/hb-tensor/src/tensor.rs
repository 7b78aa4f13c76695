//! The [`Tensor`] type: one ndarray per ONNX element type.

use crate::{DType, Result, TensorError};
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// A dense tensor of any supported element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// float32
    F32(ArrayD<f32>),
    /// float64
    F64(ArrayD<f64>),
    /// float16
    F16(ArrayD<f16>),
    /// bfloat16
    BF16(ArrayD<bf16>),
    /// int8
    I8(ArrayD<i8>),
    /// int16
    I16(ArrayD<i16>),
    /// int32
    I32(ArrayD<i32>),
    /// int64
    I64(ArrayD<i64>),
    /// uint8
    U8(ArrayD<u8>),
    /// uint16
    U16(ArrayD<u16>),
    /// uint32
    U32(ArrayD<u32>),
    /// uint64
    U64(ArrayD<u64>),
    /// bool
    Bool(ArrayD<bool>),
    /// string
    Str(ArrayD<String>),
}

/// Applies `$e` to the array inside any tensor variant, giving a value of one type.
#[macro_export]
macro_rules! with_tensor {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $e,
            $crate::Tensor::F64($a) => $e,
            $crate::Tensor::F16($a) => $e,
            $crate::Tensor::BF16($a) => $e,
            $crate::Tensor::I8($a) => $e,
            $crate::Tensor::I16($a) => $e,
            $crate::Tensor::I32($a) => $e,
            $crate::Tensor::I64($a) => $e,
            $crate::Tensor::U8($a) => $e,
            $crate::Tensor::U16($a) => $e,
            $crate::Tensor::U32($a) => $e,
            $crate::Tensor::U64($a) => $e,
            $crate::Tensor::Bool($a) => $e,
            $crate::Tensor::Str($a) => $e,
        }
    };
}

/// Maps the array inside any variant to an array of the same element type.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($e),
            $crate::Tensor::F64($a) => $crate::Tensor::F64($e),
            $crate::Tensor::F16($a) => $crate::Tensor::F16($e),
            $crate::Tensor::BF16($a) => $crate::Tensor::BF16($e),
            $crate::Tensor::I8($a) => $crate::Tensor::I8($e),
            $crate::Tensor::I16($a) => $crate::Tensor::I16($e),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($e),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($e),
            $crate::Tensor::U8($a) => $crate::Tensor::U8($e),
            $crate::Tensor::U16($a) => $crate::Tensor::U16($e),
            $crate::Tensor::U32($a) => $crate::Tensor::U32($e),
            $crate::Tensor::U64($a) => $crate::Tensor::U64($e),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($e),
            $crate::Tensor::Str($a) => $crate::Tensor::Str($e),
        }
    };
}

/// Maps the array inside a numeric variant (every type but bool and string)
/// to an array of the same type; `$e` may use the element type as `$T`.
/// Evaluates to `Option<Tensor>` (None for bool and string).
#[macro_export]
macro_rules! map_numeric {
    ($t:expr, $a:ident, $T:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => {
                type $T = f32;
                Some($crate::Tensor::F32($e))
            }
            $crate::Tensor::F64($a) => {
                type $T = f64;
                Some($crate::Tensor::F64($e))
            }
            $crate::Tensor::F16($a) => {
                type $T = half::f16;
                Some($crate::Tensor::F16($e))
            }
            $crate::Tensor::BF16($a) => {
                type $T = half::bf16;
                Some($crate::Tensor::BF16($e))
            }
            $crate::Tensor::I8($a) => {
                type $T = i8;
                Some($crate::Tensor::I8($e))
            }
            $crate::Tensor::I16($a) => {
                type $T = i16;
                Some($crate::Tensor::I16($e))
            }
            $crate::Tensor::I32($a) => {
                type $T = i32;
                Some($crate::Tensor::I32($e))
            }
            $crate::Tensor::I64($a) => {
                type $T = i64;
                Some($crate::Tensor::I64($e))
            }
            $crate::Tensor::U8($a) => {
                type $T = u8;
                Some($crate::Tensor::U8($e))
            }
            $crate::Tensor::U16($a) => {
                type $T = u16;
                Some($crate::Tensor::U16($e))
            }
            $crate::Tensor::U32($a) => {
                type $T = u32;
                Some($crate::Tensor::U32($e))
            }
            $crate::Tensor::U64($a) => {
                type $T = u64;
                Some($crate::Tensor::U64($e))
            }
            $crate::Tensor::Bool(_) | $crate::Tensor::Str(_) => None,
        }
    };
}

/// Like [`map_numeric!`] for the floating-point variants only.
#[macro_export]
macro_rules! map_float {
    ($t:expr, $a:ident, $T:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => {
                type $T = f32;
                Some($crate::Tensor::F32($e))
            }
            $crate::Tensor::F64($a) => {
                type $T = f64;
                Some($crate::Tensor::F64($e))
            }
            $crate::Tensor::F16($a) => {
                type $T = half::f16;
                Some($crate::Tensor::F16($e))
            }
            $crate::Tensor::BF16($a) => {
                type $T = half::bf16;
                Some($crate::Tensor::BF16($e))
            }
            _ => None,
        }
    };
}

/// A type that can be stored in a [`Tensor`].
pub trait Element: Clone + Send + Sync + 'static {
    /// The tensor element type.
    const DTYPE: DType;
    /// Wraps an array into a tensor.
    fn wrap(a: ArrayD<Self>) -> Tensor;
    /// Borrows the array if the tensor holds this element type.
    fn view(t: &Tensor) -> Option<&ArrayD<Self>>;
    /// Takes the array if the tensor holds this element type.
    fn unwrap_array(t: Tensor) -> std::result::Result<ArrayD<Self>, Tensor>;
}

/// A numeric element with lossy conversions through f64 and i64 (Rust `as` semantics).
pub trait Scalar: Element + Copy + PartialOrd + Default + std::fmt::Debug {
    /// To f64.
    fn to_f64(self) -> f64;
    /// From f64 (saturating for integers, NaN → 0).
    fn from_f64(v: f64) -> Self;
    /// To i64 (exact for integer types).
    fn to_i64(self) -> i64;
    /// From i64 (wrapping for narrower integers).
    fn from_i64(v: i64) -> Self;
    /// Whether the type is a float type.
    const IS_FLOAT: bool;
}

macro_rules! element {
    ($t:ty, $v:ident, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$v(a)
            }
            fn view(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t {
                    Tensor::$v(a) => Some(a),
                    _ => None,
                }
            }
            fn unwrap_array(t: Tensor) -> std::result::Result<ArrayD<Self>, Tensor> {
                match t {
                    Tensor::$v(a) => Ok(a),
                    other => Err(other),
                }
            }
        }
        impl From<ArrayD<$t>> for Tensor {
            fn from(a: ArrayD<$t>) -> Tensor {
                Tensor::$v(a)
            }
        }
    };
}

element!(f32, F32, F32);
element!(f64, F64, F64);
element!(f16, F16, F16);
element!(bf16, BF16, BF16);
element!(i8, I8, I8);
element!(i16, I16, I16);
element!(i32, I32, I32);
element!(i64, I64, I64);
element!(u8, U8, U8);
element!(u16, U16, U16);
element!(u32, U32, U32);
element!(u64, U64, U64);
element!(bool, Bool, Bool);
element!(String, Str, String);

macro_rules! scalar_prim {
    ($t:ty, $float:expr) => {
        impl Scalar for $t {
            const IS_FLOAT: bool = $float;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_i64(self) -> i64 {
                self as i64
            }
            #[inline]
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
scalar_prim!(f32, true);
scalar_prim!(f64, true);
scalar_prim!(i8, false);
scalar_prim!(i16, false);
scalar_prim!(i32, false);
scalar_prim!(i64, false);
scalar_prim!(u8, false);
scalar_prim!(u16, false);
scalar_prim!(u32, false);
scalar_prim!(u64, false);

macro_rules! scalar_half {
    ($t:ty) => {
        impl Scalar for $t {
            const IS_FLOAT: bool = true;
            #[inline]
            fn to_f64(self) -> f64 {
                self.to_f64()
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
            #[inline]
            fn to_i64(self) -> i64 {
                self.to_f64() as i64
            }
            #[inline]
            fn from_i64(v: i64) -> Self {
                <$t>::from_f64(v as f64)
            }
        }
    };
}
scalar_half!(f16);
scalar_half!(bf16);

impl Tensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::F16(_) => DType::F16,
            Tensor::BF16(_) => DType::BF16,
            Tensor::I8(_) => DType::I8,
            Tensor::I16(_) => DType::I16,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::U8(_) => DType::U8,
            Tensor::U16(_) => DType::U16,
            Tensor::U32(_) => DType::U32,
            Tensor::U64(_) => DType::U64,
            Tensor::Bool(_) => DType::Bool,
            Tensor::Str(_) => DType::String,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        with_tensor!(self, a => a.shape())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_tensor!(self, a => a.len())
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A float32 tensor from a shape and data.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        Self::from_vec(shape, data)
    }

    /// A tensor of any element type from a shape and data.
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        let n = data.len();
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(T::wrap)
            .map_err(|_| TensorError::Shape(format!("{n} elements do not fill shape {shape:?}")))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        T::wrap(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A zero-filled tensor of the given type and shape.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let s = IxDyn(shape);
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(s)),
            DType::F64 => Tensor::F64(ArrayD::zeros(s)),
            DType::F16 => Tensor::F16(ArrayD::from_elem(s, f16::ZERO)),
            DType::BF16 => Tensor::BF16(ArrayD::from_elem(s, bf16::ZERO)),
            DType::I8 => Tensor::I8(ArrayD::zeros(s)),
            DType::I16 => Tensor::I16(ArrayD::zeros(s)),
            DType::I32 => Tensor::I32(ArrayD::zeros(s)),
            DType::I64 => Tensor::I64(ArrayD::zeros(s)),
            DType::U8 => Tensor::U8(ArrayD::zeros(s)),
            DType::U16 => Tensor::U16(ArrayD::zeros(s)),
            DType::U32 => Tensor::U32(ArrayD::zeros(s)),
            DType::U64 => Tensor::U64(ArrayD::zeros(s)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(s, false)),
            DType::String => Tensor::Str(ArrayD::from_elem(s, String::new())),
        }
    }

    /// Borrows the array if the tensor holds element type `T`.
    pub fn as_array<T: Element>(&self) -> Option<&ArrayD<T>> {
        T::view(self)
    }

    /// Borrows a float32 array, or fails naming the actual type.
    pub fn as_f32(&self) -> Result<&ArrayD<f32>> {
        f32::view(self).ok_or(TensorError::UnsupportedDType(self.dtype()))
    }

    /// Takes the array if the tensor holds element type `T`.
    pub fn into_array<T: Element>(self) -> Result<ArrayD<T>> {
        T::unwrap_array(self).map_err(|t| TensorError::UnsupportedDType(t.dtype()))
    }

    /// A float32 copy of a numeric or bool tensor.
    pub fn to_f32(&self) -> Result<ArrayD<f32>> {
        match self.cast(DType::F32)? {
            Tensor::F32(a) => Ok(a),
            _ => unreachable!("cast to F32 returns F32"),
        }
    }

    /// The float32 view of a float32 tensor, or a converted copy of any other numeric one.
    pub fn to_f32_cow(&self) -> Result<std::borrow::Cow<'_, ArrayD<f32>>> {
        match self {
            Tensor::F32(a) => Ok(std::borrow::Cow::Borrowed(a)),
            other => Ok(std::borrow::Cow::Owned(other.to_f32()?)),
        }
    }

    /// All elements as f64 (numeric and bool tensors).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        match self {
            Tensor::Bool(a) => Ok(a.iter().map(|&b| b as u8 as f64).collect()),
            Tensor::Str(_) => Err(TensorError::UnsupportedDType(DType::String)),
            t => Ok(numeric_iter_f64(t)),
        }
    }

    /// All elements as i64 (integer, bool and float tensors; floats truncate).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        macro_rules! conv {
            ($a:expr) => {
                $a.iter().map(|v| Scalar::to_i64(*v)).collect()
            };
        }
        Ok(match self {
            Tensor::I64(a) => a.iter().copied().collect(),
            Tensor::I32(a) => conv!(a),
            Tensor::I16(a) => conv!(a),
            Tensor::I8(a) => conv!(a),
            Tensor::U8(a) => conv!(a),
            Tensor::U16(a) => conv!(a),
            Tensor::U32(a) => conv!(a),
            Tensor::U64(a) => conv!(a),
            Tensor::F32(a) => conv!(a),
            Tensor::F64(a) => conv!(a),
            Tensor::F16(a) => conv!(a),
            Tensor::BF16(a) => conv!(a),
            Tensor::Bool(a) => a.iter().map(|&b| b as i64).collect(),
            Tensor::Str(_) => return Err(TensorError::UnsupportedDType(DType::String)),
        })
    }

    /// Converts to another element type (ONNX `Cast` semantics for numbers;
    /// strings parse from / format to numbers).
    pub fn cast(&self, to: DType) -> Result<Tensor> {
        if self.dtype() == to {
            return Ok(self.clone());
        }
        if let Tensor::Str(a) = self {
            return cast_from_strings(a, to);
        }
        if to == DType::String {
            return Ok(Tensor::Str(match self {
                Tensor::Bool(a) => a.mapv(|b| if b { "1".into() } else { "0".into() }),
                t => {
                    let v = numeric_iter_f64(t);
                    let strings: Vec<String> = v.iter().map(|x| format_number(*x)).collect();
                    ArrayD::from_shape_vec(IxDyn(self.shape()), strings)
                        .map_err(|e| TensorError::Shape(e.to_string()))?
                }
            }));
        }
        if let Tensor::Bool(a) = self {
            return Ok(cast_array(&a.mapv(|b| b as u8), to));
        }
        Ok(with_numeric_ref(self, to))
    }

    /// Same data with a new shape (element count must match).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(TensorError::Shape(format!(
                "cannot reshape {:?} ({} elements) to {:?}",
                self.shape(),
                self.len(),
                shape
            )));
        }
        Ok(map_tensor!(self, a => {
            let v: Vec<_> = a.iter().cloned().collect();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("element count checked")
        }))
    }

    /// Same data with a new shape, without copying when the data is contiguous.
    pub fn into_reshaped(self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(TensorError::Shape(format!(
                "cannot reshape {:?} ({} elements) to {:?}",
                self.shape(),
                self.len(),
                shape
            )));
        }
        Ok(map_tensor!(self, a => {
            if a.is_standard_layout() {
                a.into_shape_with_order(IxDyn(shape)).expect("element count checked")
            } else {
                let v: Vec<_> = a.iter().cloned().collect();
                ArrayD::from_shape_vec(IxDyn(shape), v).expect("element count checked")
            }
        }))
    }

    /// A standard-layout (row-major contiguous) version of this tensor.
    pub fn into_standard_layout(self) -> Tensor {
        map_tensor!(self, a => if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() })
    }

    /// Short human description, e.g. `float32[1,3,224,224]`.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.dtype(), dims.join(","))
    }
}

/// Views an f32 tensor's array; helper for kernels taking `&ArrayViewD`.
pub fn view_f32(t: &Tensor) -> Option<ArrayViewD<'_, f32>> {
    f32::view(t).map(|a| a.view())
}

fn numeric_iter_f64(t: &Tensor) -> Vec<f64> {
    macro_rules! it {
        ($a:expr) => {
            $a.iter().map(|v| Scalar::to_f64(*v)).collect()
        };
    }
    match t {
        Tensor::F32(a) => it!(a),
        Tensor::F64(a) => it!(a),
        Tensor::F16(a) => it!(a),
        Tensor::BF16(a) => it!(a),
        Tensor::I8(a) => it!(a),
        Tensor::I16(a) => it!(a),
        Tensor::I32(a) => it!(a),
        Tensor::I64(a) => it!(a),
        Tensor::U8(a) => it!(a),
        Tensor::U16(a) => it!(a),
        Tensor::U32(a) => it!(a),
        Tensor::U64(a) => it!(a),
        Tensor::Bool(a) => a.iter().map(|&b| b as u8 as f64).collect(),
        Tensor::Str(_) => Vec::new(),
    }
}

/// Casts a numeric array to `to`. Integer → integer goes through i64 (exact,
/// wrapping like C); anything involving floats goes through f64.
fn cast_array<S: Scalar>(a: &ArrayD<S>, to: DType) -> Tensor {
    fn go<S: Scalar, D: Scalar>(a: &ArrayD<S>) -> ArrayD<D> {
        if S::IS_FLOAT || D::IS_FLOAT {
            a.mapv(|v| D::from_f64(v.to_f64()))
        } else {
            a.mapv(|v| D::from_i64(v.to_i64()))
        }
    }
    match to {
        DType::F32 => Tensor::F32(go(a)),
        DType::F64 => Tensor::F64(go(a)),
        DType::F16 => Tensor::F16(go(a)),
        DType::BF16 => Tensor::BF16(go(a)),
        DType::I8 => Tensor::I8(go(a)),
        DType::I16 => Tensor::I16(go(a)),
        DType::I32 => Tensor::I32(go(a)),
        DType::I64 => Tensor::I64(go(a)),
        DType::U8 => Tensor::U8(go(a)),
        DType::U16 => Tensor::U16(go(a)),
        DType::U32 => Tensor::U32(go(a)),
        DType::U64 => Tensor::U64(go(a)),
        DType::Bool => Tensor::Bool(a.mapv(|v| v.to_f64() != 0.0)),
        DType::String => unreachable!("string casts are handled by the caller"),
    }
}

fn with_numeric_ref(t: &Tensor, to: DType) -> Tensor {
    match t {
        Tensor::F32(a) => cast_array(a, to),
        Tensor::F64(a) => cast_array(a, to),
        Tensor::F16(a) => cast_array(a, to),
        Tensor::BF16(a) => cast_array(a, to),
        Tensor::I8(a) => cast_array(a, to),
        Tensor::I16(a) => cast_array(a, to),
        Tensor::I32(a) => cast_array(a, to),
        Tensor::I64(a) => cast_array(a, to),
        Tensor::U8(a) => cast_array(a, to),
        Tensor::U16(a) => cast_array(a, to),
        Tensor::U32(a) => cast_array(a, to),
        Tensor::U64(a) => cast_array(a, to),
        Tensor::Bool(_) | Tensor::Str(_) => unreachable!("handled by the caller"),
    }
}

fn cast_from_strings(a: &ArrayD<String>, to: DType) -> Result<Tensor> {
    let parsed: Vec<f64> = a
        .iter()
        .map(|s| {
            let l = s.trim().to_ascii_lowercase();
            match l.as_str() {
                "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
                "-inf" | "-infinity" => f64::NEG_INFINITY,
                "nan" | "+nan" | "-nan" => f64::NAN,
                _ => l.parse::<f64>().unwrap_or(f64::NAN),
            }
        })
        .collect();
    let arr = ArrayD::from_shape_vec(IxDyn(a.shape()), parsed)
        .map_err(|e| TensorError::Shape(e.to_string()))?;
    Ok(cast_array(&arr, to))
}

fn format_number(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "INF".into()
        } else {
            "-INF".into()
        }
    } else {
        format!("{x}")
    }
}
