import { describeHeads } from './heads';

describeHeads(192);
