/**
 * sealed-edge's homomorphic engine: CKKS through node-seal, encrypted dense layers and
 * polynomial activations, packed for encrypted weights × encrypted inputs. Pure
 * TypeScript with no platform imports: the same code runs in Node and in a browser worker.
 */
export { HeError, type HeErrorCode } from './errors';
export { initSeal, type SealLoader, type SealRuntime } from './seal';
export {
  planParameters,
  checkParameters,
  describeParameters,
  MAX_MODULUS_BITS,
  NOISE_MARGIN_BITS,
  type HeParameters,
  type ParameterRequest,
  type Scheme,
  type SecurityBits,
} from './params';
export { HeContext } from './context';
export { describeLayers, layerNames, polynomialText } from './describe';
export { calibrateRanges, type CalibratedRanges, integerBitsFor } from './ranges';
export { OwnerKeys, DeviceKeys, keySetInfo, containerScheme } from './keys';
export {
  planClassifier,
  planningFor,
  layoutSlots,
  encryptClassifier,
  EncryptedClassifier,
  decryptResult,
  DEFAULT_MODE,
  type ClassifierPlan,
  type Mode,
  type Evaluation,
  type ShareEvaluation,
  type StageTimings,
  type Progress,
} from './classifier';
export {
  classifierDepth,
  isComplex,
  layerParts,
  type Layer,
  type LayerShape,
  type DenseLayer,
  type PolyLayer,
  type LayerPlan,
  type PolyPlan,
  shareRanges,
} from './circuit';
export { type ConvLayer, type ConvShape, type ConvGeometry, convGeometry, describeConv, floatConv } from './conv';
export { type DensePlan, lowerBoundMults } from './packing';
export { referenceEvaluate, referenceModel, floatEvaluate, outputCount } from './reference';
export { type OpCounts, zeroCounts } from './trace';
export { type Disposable, openClassifier, type OpenedClassifier, Scope, withScope } from './scope';
export { type BgvParameters, checkBgvParameters, describeBgvParameters, isBgvParameters } from './bgv/params';
export { type FixedPoint, type LayerBound } from './bgv/fixed-point';
export { planBgv, planBgvClassifier, type BgvPlan, type BgvPlanOptions, type BgvClassifierPlan } from './bgv/plan';
export { BgvContext } from './bgv/context';
export { BgvOwnerKeys, BgvDeviceKeys, bgvKeySetInfo, type BgvDecoding } from './bgv/keys';
export {
  encryptBgvClassifier,
  EncryptedBgvClassifier,
  decryptBgvResult,
  mergeBgvResults,
  verifyBgvClassifier,
  bgvClassifierInfo,
  type BgvScores,
} from './bgv/classifier';
export { bgvReferenceModel } from './bgv/reference';
