import { describeHeads } from './heads';

describeHeads(256);
