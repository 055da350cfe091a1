import { describeHeads } from './heads';

describeHeads(128);
